//! `olm bench`: llama-bench's tests, shapes and field names.

use serde_json::Value;

use crate::common::{assert_exit, run, smollm2, stdout, TestEnv};

#[test]
fn json_report_has_llama_bench_fields() {
    let env = TestEnv::new();
    let output = run(env.olm().args([
        "bench",
        smollm2().to_str().unwrap(),
        "-p",
        "32",
        "-n",
        "4",
        "-r",
        "2",
        "-o",
        "json",
    ]));
    assert_exit(&output, 0);
    let records: Value = serde_json::from_str(&stdout(&output)).expect("JSON array");
    let records = records.as_array().expect("array");
    let tests: Vec<_> = records
        .iter()
        .map(|r| r["test"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tests, ["pp32", "tg4"]);
    for record in records {
        for field in [
            "avg_ts",
            "stddev_ts",
            "avg_ns",
            "model_size",
            "model_n_params",
            "n_threads",
            "n_batch",
            "n_ubatch",
        ] {
            assert!(record[field].is_number(), "{field} missing: {record}");
        }
        assert!(record["avg_ts"].as_f64().unwrap() > 0.0, "{record}");
        assert_eq!(
            record["samples_ts"].as_array().unwrap().len(),
            2,
            "{record}"
        );
        assert!(
            record["model_type"].as_str().unwrap().contains("Q4_1"),
            "{record}"
        );
    }
    assert_eq!(records[0]["n_prompt"], 32);
    assert_eq!(records[1]["n_gen"], 4);
}

#[test]
fn markdown_table_streams_one_row_per_test() {
    let env = TestEnv::new();
    let output = run(env.olm().args([
        "bench",
        smollm2().to_str().unwrap(),
        "-p",
        "16,32",
        "-n",
        "0",
        "-r",
        "1",
        "-t",
        "1",
    ]));
    assert_exit(&output, 0);
    let table = stdout(&output);
    let lines: Vec<_> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("| model | size | params | backend | threads |"),
        "{table}"
    );
    assert!(
        lines[2].contains("| pp16 |") && lines[3].contains("| pp32 |"),
        "{table}"
    );
    assert!(lines[2].contains(" ± "), "{table}");
}

#[test]
fn concurrency_measures_batched_sequences() {
    let env = TestEnv::new();
    let output = run(env.olm().args([
        "bench",
        smollm2().to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "4",
        "--concurrency",
        "1,4",
        "-r",
        "1",
        "-o",
        "jsonl",
    ]));
    assert_exit(&output, 0);
    let records: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["test"], "tg4 x4");
    assert_eq!(records[1]["n_seq"], 4);
}

#[test]
fn csv_has_a_header_and_rows() {
    let env = TestEnv::new();
    let output = run(env.olm().args([
        "bench",
        smollm2().to_str().unwrap(),
        "-p",
        "16",
        "-n",
        "0",
        "-r",
        "1",
        "-o",
        "csv",
    ]));
    assert_exit(&output, 0);
    let text = stdout(&output);
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("model_filename,model_type,"),
        "{text}"
    );
    assert!(lines.next().unwrap().contains(",pp16,"), "{text}");
}

/// Issue 16: `--draft ngram` adds copy tests without and with speculative
/// decoding, and reports how many draft tokens were proposed and accepted.
#[test]
fn draft_adds_copy_tests_with_draft_counts() {
    let env = TestEnv::new();
    let output = run(env.olm().args([
        "bench",
        smollm2().to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "48",
        "-r",
        "1",
        "-t",
        "1",
        "--draft",
        "ngram",
        "-o",
        "json",
    ]));
    assert_exit(&output, 0);
    let records: Value = serde_json::from_str(&stdout(&output)).expect("JSON array");
    let records = records.as_array().expect("array");
    let tests: Vec<&str> = records
        .iter()
        .map(|r| r["test"].as_str().unwrap())
        .collect();
    assert_eq!(tests, ["tg48", "tg48 copy", "tg48 copy+draft"]);
    assert!(records[0].get("n_drafted").is_none());
    assert_eq!(records[1]["n_drafted"], 0);
    let drafted = records[2]["n_drafted"].as_u64().unwrap();
    let accepted = records[2]["n_accepted"].as_u64().unwrap();
    assert!(
        accepted > 10 && drafted >= accepted,
        "{accepted} of {drafted}"
    );
    assert!(records[2]["avg_ts"].as_f64().unwrap() > 0.0);
}
