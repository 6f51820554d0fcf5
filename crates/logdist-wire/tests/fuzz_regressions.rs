//! Inputs the fuzz targets in `fuzz/` found wrong, kept as plain tests so the
//! fixes stay fixed without a fuzzer (docs/security.md, "Fuzzing").

use logdist_wire::{PriorityTable, ndjson_priority};

/// `ndjson_priority` target: a `level` string holding an escape that is no
/// character (a lone UTF-16 surrogate) is still a string, just one no table
/// entry matches, so it gives the default priority and `severity` is not
/// consulted (protocol.md 2.2). It used to count as absent and let
/// `severity` decide.
#[test]
fn undecodable_level_string_gives_the_default_not_the_severity() {
    let table = PriorityTable::default();
    for line in [
        &br#"{"level":"\ud800","severity":"fatal"}"#[..],
        br#"{"level":"\udc00x","severity":"error"}"#,
        br#"{"level":"\ud800\u0041","severity":"fatal"}"#,
    ] {
        assert_eq!(
            ndjson_priority(line, &table),
            Ok(3),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    // The same for `severity` alone: a string not in the table, so the default.
    let custom = PriorityTable::new([("alert".to_owned(), 1)], 9);
    assert_eq!(ndjson_priority(br#"{"severity":"\udfff"}"#, &custom), Ok(9));
    // A valid surrogate pair is a character like any other.
    let emoji = PriorityTable::new([("\u{1f525}".to_owned(), 0)], 9);
    assert_eq!(
        ndjson_priority(br#"{"level":"\ud83d\udd25"}"#, &emoji),
        Ok(0)
    );
}
