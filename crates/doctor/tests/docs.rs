//! docs/DOCTOR.md has one section per cause id, and no section for an id
//! the code does not have.

use holdfast_doctor::Cause;

#[test]
fn every_cause_is_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/DOCTOR.md")).unwrap();
    let sections: Vec<&str> =
        doc.lines().filter_map(|l| l.strip_prefix("### `")).filter_map(|l| l.strip_suffix('`')).collect();
    let ids: Vec<&str> = Cause::ALL.iter().map(|c| c.id()).collect();
    assert_eq!(sections, ids, "docs/DOCTOR.md sections must list every cause id, in Cause::ALL order");
}
