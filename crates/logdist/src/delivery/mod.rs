//! Delivery: from the analyzer queues to the analyzer sockets, and whatever
//! happens to a message that cannot be delivered.
//!
//! An analyzer either dials in to the [`listener`] and introduces itself
//! ([`handshake`]), or is dialed by a [`static_link`]; both are [`attach`]ed
//! the same way: registered in the [`directory`] (which puts it in the
//! router's table), served by a [`session`] (strict-priority writer,
//! in-flight window released by acks, see [`ack_state`]) and, when the
//! connection ends, what it held goes to [`redelivery`] (at shutdown,
//! draining sessions wait for it: [`drain`]). Messages no
//! analyzer can take wait in the router's holding queue ([`holding`]);
//! messages that used up their attempts go to the [`dead_letter`] file, which
//! [`replay`] sends back in.

pub mod access;
pub mod ack_state;
pub mod attach;
pub mod backlog;
pub mod context;
pub mod dead_letter;
pub mod directory;
pub mod drain;
pub mod handshake;
pub mod holding;
pub mod listener;
pub mod probe;
pub mod redelivery;
pub mod replay;
pub mod session;
pub mod static_link;
