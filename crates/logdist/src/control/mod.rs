//! Control: what operators see and change while logdist runs. The [`admin`]
//! HTTP API (which also carries HTTP ingest), Prometheus [`metrics`], the
//! [`metrics_csv`] export, all reading what the data path counts anyway
//! ([`observed`]), and config [`reload`] on SIGHUP.

pub mod admin;
pub mod metrics;
pub mod metrics_csv;
pub mod observed;
pub mod reload;
