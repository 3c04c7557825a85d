//! Hostile chat templates (T-A7): a real model whose embedded template
//! recurses forever or renders gigabytes must fail fast with a clear error
//! and a way out (`--chat-template`), never hang or exhaust memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use olm::gguf::{self, writer::GgufBuilder};

use crate::common::{assert_exit, run, smollm2, stderr, stdout, TestEnv};

/// A copy of `original` whose `tokenizer.chat_template` is `template`, with
/// the original weights, so llama.cpp loads it for real.
fn with_template(original: &Path, template: &str, dir: &Path) -> PathBuf {
    let file = gguf::inspect(original).expect("inspect test model");
    let header = GgufBuilder::from_file(&file)
        .set_metadata("tokenizer.chat_template", template.to_owned())
        .data_len(0)
        .to_bytes();
    let weights = std::fs::read(original).expect("read test model");
    let path = dir.join("hostile-template.gguf");
    let mut out = std::fs::File::create(&path).expect("create model copy");
    out.write_all(&header).unwrap();
    out.write_all(&weights[file.data_offset as usize..])
        .unwrap();
    path
}

fn assert_template_rejected_fast(template: &str) {
    let env = TestEnv::new();
    let model = with_template(&smollm2(), template, env.path());
    let started = Instant::now();
    let output = run(env.olm().arg("run").arg(&model).args(["hi", "-n", "4"]));
    let elapsed = started.elapsed();
    assert_exit(&output, 1);
    let err = stderr(&output);
    assert!(
        err.starts_with("error: ") && err.contains("chat template"),
        "{err}"
    );
    assert!(
        err.contains("--chat-template"),
        "a way out is offered: {err}"
    );
    assert!(stdout(&output).is_empty());
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // The way out works: a built-in template instead of the embedded one.
    let output =
        run(env
            .olm()
            .arg("run")
            .arg(&model)
            .args(["hi", "-n", "4", "--chat-template", "chatml"]));
    assert_exit(&output, 0);
}

#[test]
fn t_a7_recursive_template_fails_fast() {
    assert_template_rejected_fast("{% macro x() %}{{ x() }}{% endmacro %}{{ x() }}");
}

#[test]
fn t_a7_gigabyte_template_output_fails_fast() {
    assert_template_rejected_fast(
        "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}",
    );
}

#[test]
fn t_a7_deeply_nested_expression_fails_fast() {
    assert_template_rejected_fast(&format!(
        "{{{{ {}1{} }}}}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    ));
}
