//! The fuzz targets' own checks (fuzz/checks.rs), over every input committed for them: the
//! corpus a long coverage-guided run kept (`fuzz/corpus/<target>/`) and every input that
//! once broke an invariant (`fuzz/regressions/<target>/`). On the stable toolchain, in CI.

#[path = "../../fuzz/checks.rs"]
#[allow(dead_code)]
mod checks;

use std::path::PathBuf;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 4] = [
    ("annotation", checks::annotation),
    ("dockerconfig_merge", checks::dockerconfig_merge),
    ("admission_review", checks::admission_review),
    ("refresher_view", checks::refresher_view),
];

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

/// Runs each input, saying which one failed.
fn replay(kind: &str) -> usize {
    let mut total = 0;
    for (target, check) in TARGETS {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its check",
                file.display()
            );
            total += 1;
        }
    }
    total
}

#[test]
fn every_crash_input_found_so_far_passes() {
    let replayed = replay("regressions");
    println!("replayed {replayed} regression inputs");
    assert!(
        !inputs("regressions", "annotation").is_empty(),
        "the first regression input is committed"
    );
}

#[test]
fn the_committed_corpus_passes() {
    let replayed = replay("corpus");
    println!("replayed {replayed} corpus inputs");
    for (target, _) in TARGETS {
        assert!(
            !inputs("corpus", target).is_empty(),
            "{target} has a corpus"
        );
    }
}
