//! Companion records: typed, versioned, saved with the checkpoint; a newer layout upgrades an
//! older one, and a record newer than its reader is an error naming the key.

use downhill::clip::{ClipGrads, GradClip};
use downhill::state::{Record, RecordDoc};
use downhill::testkit::checkpoint_header;
use downhill::{ErrorKind, Optimizer, SgdConfig};
use serde_json::{json, Value};

/// A trainer's position, first layout.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct PositionV1 {
    epoch: u64,
}

impl Record for PositionV1 {
    const KEY: &'static str = "trainer";
    const VERSION: u32 = 1;
}

/// The same record, second layout: the step inside the epoch was added.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct PositionV2 {
    epoch: u64,
    step: u64,
}

impl Record for PositionV2 {
    const KEY: &'static str = "trainer";
    const VERSION: u32 = 2;
    fn upgrade(version: u32, data: Value) -> downhill::Result<Self> {
        match version {
            1 => {
                let v1: PositionV1 = serde_json::from_value(data)
                    .map_err(|e| downhill::Error::checkpoint(format!("trainer v1: {e}")))?;
                Ok(PositionV2 {
                    epoch: v1.epoch,
                    step: 0,
                })
            }
            other => Err(downhill::Error::checkpoint(format!(
                "record 'trainer' has version {other}, this build reads 1 and 2"
            ))),
        }
    }
}

fn sgd() -> Box<dyn Optimizer> {
    Box::new(SgdConfig::default().build([("w", 2)]).unwrap())
}

#[test]
fn a_version_2_record_upgrades_a_saved_version_1() {
    let mut old = sgd();
    old.set_record(&PositionV1 { epoch: 7 }).unwrap();
    let bytes = old.to_bytes().unwrap();
    assert_eq!(
        checkpoint_header(&bytes)["state"]["records"]["trainer"],
        json!({"version": 1, "data": {"epoch": 7}})
    );
    // Through a wrapper too: records are the inner optimizer's.
    let mut new = ClipGrads::new(sgd(), GradClip::GlobalNorm(1.0)).unwrap();
    new.load_bytes(&bytes).unwrap();
    let new: &mut dyn Optimizer = &mut new;
    assert_eq!(
        new.record::<PositionV2>().unwrap(),
        Some(PositionV2 { epoch: 7, step: 0 })
    );
    // Its own version reads back as it is, without an upgrade.
    new.set_record(&PositionV2 { epoch: 8, step: 3 }).unwrap();
    let bytes = new.to_bytes().unwrap();
    let mut again = sgd();
    again.load_bytes(&bytes).unwrap();
    assert_eq!(
        again.record::<PositionV2>().unwrap(),
        Some(PositionV2 { epoch: 8, step: 3 })
    );
    assert_eq!(again.record_doc("trainer").unwrap().version, 2);
    // On an engine directly.
    let mut engine = SgdConfig::default().build([("w", 2)]).unwrap();
    engine.load_bytes(&bytes).unwrap();
    assert_eq!(
        engine.record::<PositionV2>().unwrap(),
        Some(PositionV2 { epoch: 8, step: 3 })
    );
    assert!(engine.record::<PositionV1>().is_err());
}

#[test]
fn a_record_of_an_unknown_newer_version_is_an_error_naming_the_key() {
    let mut opt = sgd();
    opt.set_record(&PositionV2 { epoch: 1, step: 2 }).unwrap();
    let mut reader = sgd();
    reader.load_bytes(&opt.to_bytes().unwrap()).unwrap();
    // A reader that knows only version 1 (the default `upgrade` refuses).
    let err = reader.record::<PositionV1>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Checkpoint);
    assert!(err.message().contains("'trainer'"), "{err}");
    assert!(err.message().contains("version 2"), "{err}");
    // A malformed record of the reader's own version names the key too.
    reader.set_record_doc(
        "trainer",
        RecordDoc {
            version: 2,
            data: json!({"epoch": "one"}),
        },
    );
    let err = reader.record::<PositionV2>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Checkpoint);
    assert!(err.message().contains("'trainer'"), "{err}");
    // A missing record is not an error.
    assert_eq!(sgd().record::<PositionV2>().unwrap(), None);
}
