//! ModelScope's API, as the `modelscope` client (modelscope-hub 0.5.1) uses
//! it:
//!
//! - listing: `GET /api/v1/models/{owner}/{name}/repo/files?Revision=master&Recursive=True`,
//!   answered `{"Code": 200, "Data": {"Files": [{"Path", "Name", "Type",
//!   "Size", "Sha256", ...}]}}`. The server stops at 3000 entries without
//!   saying so; a listing that comes back that long is walked directory by
//!   directory with `Root=`, as the client does;
//! - download: `GET /api/v1/models/{owner}/{name}/repo?Revision=master&FilePath=...`,
//!   which redirects large files to object storage (where `Range` works)
//!   and serves small ones itself (200, `Range` ignored): the shared
//!   transfer in `download.rs` handles both.
//!
//! Unlike the client, olm validates every name, size and hash in a listing
//! before any of it touches a path (a `../` name is refused, not written
//! outside the cache), and requires the listing's sha256 for each file it
//! downloads, so every file is verified before it becomes visible.

use std::collections::BTreeMap;

use serde_json::Value;

use super::api::{check_size, encode_query};
use super::{FileHead, Hub, HubError, PullReporter, RemoteFile};
use crate::store::names::{check_repo_file_name, escaped, is_sha256};
use crate::store::{RepoId, MODELSCOPE_REVISION};

/// The most entries the server returns for one listing (the client's
/// `REPO_FILES_TRUNCATION_LIMIT`).
const LISTING_LIMIT: usize = 3000;
/// The most listing requests spent walking a truncated tree.
const MAX_LISTING_REQUESTS: usize = 200;

/// One validated entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File(RemoteFile),
    Folder(String),
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::File(file) => &file.name,
            Entry::Folder(path) => path,
        }
    }
}

impl Hub {
    /// Every file of `repo` at `master`, with sizes and sha256.
    pub(super) fn ms_list_files(
        &self,
        repo: &RepoId,
        reporter: &dyn PullReporter,
    ) -> Result<Vec<RemoteFile>, HubError> {
        let top = self
            .ms_list_page(repo, None, true, reporter)
            .map_err(|error| match error {
                HubError::Status { status: 404, .. } => HubError::RepoNotFound(repo.to_string()),
                other => other,
            })?;
        let entries = if top.len() < LISTING_LIMIT {
            top
        } else {
            self.ms_walk(repo, top, reporter)?
        };
        Ok(entries
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::File(file) => Some(file),
                Entry::Folder(_) => None,
            })
            .collect())
    }

    /// A listing the server cut at its limit, completed one folder at a
    /// time: a folder whose recursive listing is cut too is listed
    /// shallowly and its subfolders walked in turn. Entries are kept once
    /// per path; at most [`MAX_LISTING_REQUESTS`] requests.
    fn ms_walk(
        &self,
        repo: &RepoId,
        top: Vec<Entry>,
        reporter: &dyn PullReporter,
    ) -> Result<Vec<Entry>, HubError> {
        let mut collected: BTreeMap<String, Entry> = BTreeMap::new();
        let mut requests = 0;
        let mut frontier: Vec<Option<String>> = vec![None];
        let mut known: BTreeMap<Option<String>, Vec<Entry>> = BTreeMap::new();
        known.insert(None, top);
        while !frontier.is_empty() && requests < MAX_LISTING_REQUESTS {
            let mut cut = Vec::new();
            for root in &frontier {
                let subtree = match known.remove(root) {
                    Some(subtree) => subtree,
                    None => {
                        requests += 1;
                        self.ms_list_page(repo, root.as_deref(), true, reporter)
                            .or_else(missing_is_empty)?
                    }
                };
                absorb(&subtree, &mut collected);
                if subtree.len() >= LISTING_LIMIT {
                    cut.push(root.clone());
                }
            }
            let mut next = Vec::new();
            for root in cut {
                if requests >= MAX_LISTING_REQUESTS {
                    break;
                }
                requests += 1;
                let shallow = self
                    .ms_list_page(repo, root.as_deref(), false, reporter)
                    .or_else(missing_is_empty)?;
                absorb(&shallow, &mut collected);
                next.extend(shallow.iter().filter_map(|entry| match entry {
                    Entry::Folder(path) if root.as_deref() != Some(path) => {
                        Some(Some(path.clone()))
                    }
                    _ => None,
                }));
            }
            next.dedup();
            frontier = next;
        }
        if !frontier.is_empty() {
            tracing::warn!(
                "{repo}: the file listing is incomplete after {MAX_LISTING_REQUESTS} requests"
            );
        }
        Ok(collected.into_values().collect())
    }

    /// One listing request (of `root`, or the whole repo), validated.
    fn ms_list_page(
        &self,
        repo: &RepoId,
        root: Option<&str>,
        recursive: bool,
        reporter: &dyn PullReporter,
    ) -> Result<Vec<Entry>, HubError> {
        let mut url = format!(
            "{}/api/v1/models/{}/{}/repo/files?Revision={MODELSCOPE_REVISION}&Recursive={}",
            self.endpoint,
            repo.owner,
            repo.name,
            if recursive { "True" } else { "False" }
        );
        if let Some(root) = root {
            url.push_str(&format!("&Root={}", encode_query(root)));
        }
        let response = self.send_with_retries("GET", &url, None, reporter)?;
        let body: Value = self.read_json(response, &url)?;
        parse_listing(&body, &url)
    }

    /// Where and what file `file` of `repo` is: its sha256 and size from the
    /// listing (a file without a sha256 is not downloaded: it could not be
    /// verified) and its download URL.
    pub(super) fn ms_head_file(
        &self,
        repo: &RepoId,
        file: &RemoteFile,
    ) -> Result<FileHead, HubError> {
        let Some(sha256) = file.sha256.clone() else {
            return Err(HubError::BadMetadata {
                what: "sha256 (the listing gives none for)",
                value: escaped(&file.name),
            });
        };
        Ok(FileHead {
            commit: MODELSCOPE_REVISION.to_owned(),
            sha256,
            size: file.size,
            url: format!(
                "{}/api/v1/models/{}/{}/repo?Revision={MODELSCOPE_REVISION}&FilePath={}",
                self.endpoint,
                repo.owner,
                repo.name,
                encode_query(&file.name)
            ),
        })
    }
}

/// Keep each path's first entry.
fn absorb(entries: &[Entry], collected: &mut BTreeMap<String, Entry>) {
    for entry in entries {
        collected
            .entry(entry.path().to_owned())
            .or_insert_with(|| entry.clone());
    }
}

/// A folder that went missing between two listings has no entries.
fn missing_is_empty(error: HubError) -> Result<Vec<Entry>, HubError> {
    match error {
        HubError::Status { status: 404, .. } => Ok(Vec::new()),
        other => Err(other),
    }
}

/// The entries of a listing answer, every value checked: names as repo
/// paths, sizes as integers, hashes as sha256. `Data` may be the list
/// itself or hold it under `Files` (the client reads both).
fn parse_listing(body: &Value, url: &str) -> Result<Vec<Entry>, HubError> {
    let refused = |message: String| HubError::Network {
        url: url.to_owned(),
        message,
        unreachable: false,
    };
    // An error answer: `Success: false`, or a `Code` other than 200 (the
    // API's own error codes, such as 10010205001, come with HTTP 200).
    let failed_code = body
        .get("Code")
        .is_some_and(|code| code.as_u64() != Some(200) && !code.is_null());
    if body.get("Success") == Some(&Value::Bool(false)) || failed_code {
        let message = body
            .get("Message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Err(refused(format!("the hub refused: {}", escaped(message))));
    }
    let data = body.get("Data").unwrap_or(body);
    let list = match data {
        Value::Array(list) => list,
        Value::Object(object) => match object.get("Files").or_else(|| object.get("files")) {
            Some(Value::Array(list)) => list,
            Some(Value::Null) | None => return Ok(Vec::new()),
            Some(_) => return Err(refused("the listing's Files is not a list".into())),
        },
        _ => return Err(refused("the answer is not a file listing".into())),
    };
    list.iter().map(|entry| parse_entry(entry, url)).collect()
}

/// One entry: a value of the wrong type or a missing field is an answer
/// olm cannot read (exit 4, as for any malformed JSON); a name or hash that
/// could not be a repo path or a sha256 is invalid metadata (exit 5).
fn parse_entry(entry: &Value, url: &str) -> Result<Entry, HubError> {
    let bad = |what: &'static str, value: &Value| HubError::BadMetadata {
        what,
        value: escaped(&value.to_string()),
    };
    let malformed = |what: &str| HubError::Network {
        url: url.to_owned(),
        message: format!(
            "the listing is not the expected JSON: {what} in {}",
            escaped(&entry.to_string())
        ),
        unreachable: false,
    };
    let field = |names: &[&str]| names.iter().find_map(|name| entry.get(*name));
    let path = match field(&["Path", "path"])
        .filter(|value| value.as_str().is_some_and(|text| !text.is_empty()))
        .or_else(|| field(&["Name"]))
    {
        Some(Value::String(path)) => path.clone(),
        Some(_) => return Err(malformed("a path that is not a string")),
        None => return Err(malformed("no path")),
    };
    check_repo_file_name(&path).map_err(|_| HubError::BadMetadata {
        what: "file name",
        value: escaped(&path),
    })?;
    let kind = match field(&["Type", "type"]) {
        Some(Value::String(kind)) => kind.as_str(),
        None | Some(Value::Null) => "blob",
        Some(_) => return Err(malformed("a type that is not a string")),
    };
    if kind == "tree" {
        return Ok(Entry::Folder(path));
    }
    let size = match field(&["Size", "size"]) {
        Some(Value::Number(number)) => number
            .as_u64()
            .ok_or_else(|| bad("size", &Value::Number(number.clone())))
            .and_then(check_size)?,
        Some(_) => return Err(malformed("a size that is not a number")),
        None => return Err(malformed("no size")),
    };
    let sha256 = match field(&["Sha256", "sha256"]) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) if is_sha256(text) => Some(text.clone()),
        Some(Value::String(text)) => return Err(bad("sha256", &Value::String(text.clone()))),
        Some(_) => return Err(malformed("a sha256 that is not a string")),
    };
    Ok(Entry::File(RemoteFile {
        name: path,
        size,
        sha256,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

    #[test]
    fn listings_in_both_shapes_are_read() {
        let files = json!([
            {"Name": "m-q4_k_m.gguf", "Path": "m-q4_k_m.gguf", "Type": "blob", "Size": 10, "Sha256": SHA, "IsLFS": true},
            {"Name": "sub", "Path": "sub", "Type": "tree", "Size": 0, "Sha256": ""},
            {"Name": "README.md", "Path": "README.md", "Type": "blob", "Size": 3, "Sha256": ""},
        ]);
        for body in [
            json!({"Code": 200, "Data": {"Files": files.clone()}, "Success": true}),
            json!({"Code": 200, "Data": files.clone()}),
        ] {
            let entries = parse_listing(&body, "u").unwrap();
            assert_eq!(entries.len(), 3);
            assert_eq!(
                entries[0],
                Entry::File(RemoteFile {
                    name: "m-q4_k_m.gguf".into(),
                    size: 10,
                    sha256: Some(SHA.into())
                })
            );
            assert_eq!(entries[1], Entry::Folder("sub".into()));
            assert!(matches!(&entries[2], Entry::File(file) if file.sha256.is_none()));
        }
        assert!(
            parse_listing(&json!({"Code": 200, "Data": {"Files": null}}), "u")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn hostile_listings_are_refused_before_any_path_is_made() {
        for entry in [
            json!({"Path": "../../x.gguf", "Type": "blob", "Size": 1, "Sha256": SHA}),
            json!({"Path": "/abs/x.gguf", "Type": "blob", "Size": 1, "Sha256": SHA}),
            json!({"Path": "a\\..\\b.gguf", "Type": "blob", "Size": 1}),
            json!({"Path": "a\u{0}b.gguf", "Type": "blob", "Size": 1}),
            json!({"Path": format!("{}.gguf", "a".repeat(300)), "Type": "blob", "Size": 1}),
            json!({"Name": "../x.gguf", "Type": "blob", "Size": 1}),
            json!({"Path": "x.gguf", "Type": "blob", "Size": -1, "Sha256": SHA}),
            json!({"Path": "x.gguf", "Type": "blob", "Size": u64::MAX, "Sha256": SHA}),
            json!({"Path": "x.gguf", "Type": "blob", "Size": (1u64 << 50) + 1, "Sha256": SHA}),
            json!({"Path": "x.gguf", "Type": "blob", "Size": 1, "Sha256": "../../x"}),
            json!({"Path": "x.gguf", "Type": "blob", "Size": 1, "Sha256": "A".repeat(64)}),
            json!({"Path": "x.gguf", "Type": "blob", "Size": 1, "Sha256": "a".repeat(63)}),
        ] {
            let body = json!({"Data": {"Files": [entry.clone()]}});
            assert!(
                matches!(parse_listing(&body, "u"), Err(HubError::BadMetadata { .. })),
                "{entry}"
            );
        }
        for body in [
            json!("x"),
            json!({"Data": {"Files": "x"}}),
            json!({"Success": false, "Message": "no"}),
            json!({"Code": 10010205001_u64, "Message": "\u{1b}[31mmodel not found", "Data": null}),
            json!({"Code": "x", "Data": {"Files": []}}),
            json!({"Data": {"Files": [{"Path": "x.gguf", "Size": "10"}]}}),
            json!({"Data": {"Files": [{"Path": 5, "Size": 1}]}}),
            json!({"Data": {"Files": [{"Size": 1}]}}),
            json!({"Data": {"Files": [{"Path": "x.gguf"}]}}),
            json!({"Data": {"Files": [{"Path": "x.gguf", "Size": 1, "Sha256": 7}]}}),
            json!({"Data": {"Files": [{"Path": "x.gguf", "Size": 1, "Type": []}]}}),
        ] {
            assert!(
                matches!(parse_listing(&body, "u"), Err(HubError::Network { .. })),
                "{body}"
            );
        }
    }
}
