//! `olm ps`: the models a running `olm serve` has loaded, as its `GET /api/ps`
//! reports them: a table like `ollama ps`, or the models array as JSON.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use serde_json::Value;

use super::UsageError;
use crate::cli::PsArgs;
use crate::human;
use crate::ui::Printer;

/// `olm serve`'s default port.
const DEFAULT_PORT: u16 = 11435;
/// Largest `/api/ps` answer read.
const MAX_REPLY_BYTES: u64 = 16 << 20;

pub fn run(args: PsArgs, _printer: &Printer) -> anyhow::Result<ExitCode> {
    let base = server_url(&args.host, args.port)?;
    let key = args.api_key.as_deref().filter(|key| !key.is_empty());
    let models = fetch_models(&base, key)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &models)?;
        writeln!(stdout)?;
    } else {
        let now = SystemTime::now();
        let rows: Vec<[String; 5]> = models.iter().map(|model| row(model, now)).collect();
        write_table(
            &mut stdout,
            ["NAME", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"],
            &rows,
        )?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The sandbox of `olm ps`: connect to the server's port only; a host
/// name other than `localhost` may need a DNS lookup.
pub(super) fn sandbox_policy(
    host: &str,
    port: Option<u16>,
) -> Result<crate::sandbox::Policy, UsageError> {
    let base = server_url(host, port)?;
    let authority = base
        .split_once("://")
        .map_or(base.as_str(), |(_, rest)| rest);
    let (name, port) = authority.rsplit_once(':').unwrap_or((authority, ""));
    let port = port.parse().unwrap_or(DEFAULT_PORT);
    let literal = name
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok();
    let name_lookup = !literal && !name.eq_ignore_ascii_case("localhost");
    Ok(crate::sandbox::Policy::client(port, name_lookup))
}

/// The server's base URL from `--host` (or `OLM_HOST`): `host`, `host:port`,
/// `[v6]:port` or `http(s)://host[:port]`; an explicit `--port` wins over the
/// host's own port.
fn server_url(host: &str, port: Option<u16>) -> Result<String, UsageError> {
    let invalid = || {
        UsageError::new(format!(
            "invalid server address '{}'",
            crate::store::names::escaped(host)
        ))
        .with_hint("give host, host:port or http://host:port (--host or OLM_HOST)")
    };
    let text = host.trim();
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => ("http", rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => ("https", rest),
        Some(_) => return Err(invalid()),
        None => ("http", text),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (name, own_port) = split_authority(authority).ok_or_else(invalid)?;
    let valid_name = !name.is_empty()
        && if name.starts_with('[') {
            name[1..name.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
        } else {
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
    if !valid_name {
        return Err(invalid());
    }
    let port = port.or(own_port).unwrap_or(DEFAULT_PORT);
    Ok(format!("{scheme}://{name}:{port}"))
}

/// `name[:port]`, `[v6][:port]`, or a bare IPv6 address (bracketed here).
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse().ok()?),
        };
        return Some((format!("[{address}]"), port));
    }
    if authority.matches(':').count() > 1 {
        return Some((format!("[{authority}]"), None));
    }
    match authority.split_once(':') {
        Some((name, port)) => Some((name.to_owned(), Some(port.parse().ok()?))),
        None => Some((authority.to_owned(), None)),
    }
}

/// `GET {base}/api/ps`'s `models` array.
fn fetch_models(base: &str, key: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .user_agent(concat!("olm/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut request = agent.get(&format!("{base}/api/ps"));
    if let Some(key) = key {
        request = request.set("Authorization", &format!("Bearer {key}"));
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Transport(transport)) => {
            return Err(anyhow!(
                "no olm server answers at {base} ({}); start one with `olm serve`",
                transport.kind().to_string().to_lowercase()
            ))
        }
        Err(ureq::Error::Status(401, _)) => {
            return Err(anyhow!(
                "the server at {base} wants an API key; set OLM_API_KEY (or pass --api-key)"
            ))
        }
        Err(ureq::Error::Status(status, response)) => {
            let message = read_json(response)
                .ok()
                .and_then(|body| error_message(&body))
                .unwrap_or_default();
            return Err(anyhow!("the server at {base} answered {status} {message}"));
        }
    };
    let body = read_json(response)
        .map_err(|error| anyhow!("the server at {base} sent an unreadable answer: {error}"))?;
    match body.get("models") {
        Some(Value::Array(models)) => Ok(models.clone()),
        _ => Err(anyhow!(
            "the server at {base} is not an olm or Ollama server (no models list in /api/ps)"
        )),
    }
}

fn read_json(response: ureq::Response) -> anyhow::Result<Value> {
    let mut text = String::new();
    response
        .into_reader()
        .take(MAX_REPLY_BYTES)
        .read_to_string(&mut text)?;
    Ok(serde_json::from_str(&text)?)
}

/// Ollama's `{"error": "..."}` or OpenAI's `{"error": {"message": "..."}}`.
fn error_message(body: &Value) -> Option<String> {
    let error = body.get("error")?;
    error
        .as_str()
        .or_else(|| error.get("message")?.as_str())
        .map(|message| format!("({message})"))
}

/// One table row: NAME, SIZE, PROCESSOR, CONTEXT, UNTIL.
fn row(model: &Value, now: SystemTime) -> [String; 5] {
    let text = |key: &str| model.get(key).and_then(Value::as_str);
    let name = text("name").or_else(|| text("model")).unwrap_or("-");
    let size = model.get("size").and_then(Value::as_u64);
    let size_vram = model.get("size_vram").and_then(Value::as_u64);
    let context = model
        .get("context_length")
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_owned(), |length| length.to_string());
    let until = text("expires_at")
        .and_then(parse_rfc3339)
        .map_or_else(|| "-".to_owned(), |expires| until(expires, now));
    let processor = match model.get("split") {
        Some(split) => split_processor(split),
        None => processor(size, size_vram),
    };
    [
        crate::ui::escape_controls(name),
        size.map_or_else(|| "-".to_owned(), human::size),
        processor,
        context,
        until,
    ]
}

/// A model split over RPC workers (`--rpc`): the share of layers here and
/// on the workers, e.g. `34% CPU, 66% RPC (2 workers)`; `--json` has the
/// whole split.
fn split_processor(split: &Value) -> String {
    let shares = split["devices"].as_array().map_or(&[][..], Vec::as_slice);
    let layers = |share: &Value| share["layers"].as_u64().unwrap_or(0);
    let total: u64 = shares.iter().map(layers).sum();
    let remote: u64 = shares
        .iter()
        .filter(|share| share["endpoint"].is_string())
        .map(layers)
        .sum();
    let mut workers: Vec<&str> = shares
        .iter()
        .filter_map(|share| share["endpoint"].as_str())
        .collect();
    workers.dedup();
    if total == 0 {
        return "-".into();
    }
    let here = ((total - remote) as f64 * 100.0 / total as f64).round() as u64;
    let plural = if workers.len() == 1 { "" } else { "s" };
    format!(
        "{here}% here, {}% RPC ({} worker{plural})",
        100 - here,
        workers.len()
    )
}

/// Where the model's weights are, as `ollama ps` says it.
fn processor(size: Option<u64>, size_vram: Option<u64>) -> String {
    let (Some(size), Some(vram)) = (size, size_vram) else {
        return "-".into();
    };
    if vram == 0 || size == 0 {
        return "100% CPU".into();
    }
    if vram >= size {
        return "100% GPU".into();
    }
    let cpu = ((size - vram) as f64 * 100.0 / size as f64).round() as u64;
    format!("{cpu}%/{}% CPU/GPU", 100 - cpu)
}

/// When an idle model unloads, relative to `now`.
fn until(expires: SystemTime, now: SystemTime) -> String {
    let Ok(left) = expires.duration_since(now) else {
        return "Stopping...".into();
    };
    let seconds = left.as_secs();
    let (count, unit) = match seconds {
        0 => return "Less than a second from now".into(),
        1..=59 => (seconds, "second"),
        60..=3599 => (seconds / 60, "minute"),
        3600..=86_399 => (seconds / 3600, "hour"),
        _ if seconds >= 50 * 365 * 86_400 => return "Forever".into(),
        _ => (seconds / 86_400, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural} from now")
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, as the server writes `expires_at`.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let bytes = text.as_bytes();
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(&rest[..1], "+" | "-") && &rest[3..4] == ":" => {
            let hours: i64 = rest[1..3].parse().ok()?;
            let minutes: i64 = rest[4..6].parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Columns padded to their widest cell, three spaces apart (as `ollama ps`).
fn write_table(
    out: &mut dyn Write,
    header: [&str; 5],
    rows: &[[String; 5]],
) -> std::io::Result<()> {
    let mut widths = header.map(|title| title.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: [&str; 5]| -> std::io::Result<()> {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(header)?;
    for row in rows {
        line(row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let url = |host: &str, port: Option<u16>| server_url(host, port).ok();
        assert_eq!(
            url("127.0.0.1", None).as_deref(),
            Some("http://127.0.0.1:11435")
        );
        assert_eq!(
            url("127.0.0.1:9000", None).as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(
            url("http://box.lan:8080/", None).as_deref(),
            Some("http://box.lan:8080")
        );
        assert_eq!(
            url("https://box.lan", None).as_deref(),
            Some("https://box.lan:11435")
        );
        assert_eq!(
            url("localhost:9000", Some(7)).as_deref(),
            Some("http://localhost:7")
        );
        assert_eq!(url("[::1]:9", None).as_deref(), Some("http://[::1]:9"));
        assert_eq!(url("::1", None).as_deref(), Some("http://[::1]:11435"));
        for bad in [
            "",
            "ftp://x",
            "host:port",
            "a b",
            "x/y",
            "http://x/path",
            "[zz]:1",
            "x:99999",
        ] {
            assert!(url(bad, None).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_parse() {
        let time = parse_rfc3339("2024-02-29T23:59:59.500000000Z").expect("parses");
        assert_eq!(time, UNIX_EPOCH + Duration::new(1_709_251_199, 500_000_000));
        assert_eq!(
            parse_rfc3339("2024-03-01T01:59:59+02:00"),
            Some(UNIX_EPOCH + Duration::from_secs(1_709_251_199))
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-02-29T23:59:59",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn until_reads_like_ollama() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |seconds: u64| until(now + Duration::from_secs(seconds), now);
        assert_eq!(at(0), "Less than a second from now");
        assert_eq!(at(1), "1 second from now");
        assert_eq!(at(299), "4 minutes from now");
        assert_eq!(at(7200), "2 hours from now");
        assert_eq!(at(100 * 365 * 86_400), "Forever");
        assert_eq!(until(now - Duration::from_secs(1), now), "Stopping...");
    }

    #[test]
    fn a_split_model_shows_its_share_of_layers_per_side() {
        let split = serde_json::json!({"n_layer": 30, "devices": [
            {"device": "CPU", "endpoint": null, "layers": 10},
            {"device": "RPC0", "endpoint": "10.0.0.2:50052", "layers": 10},
            {"device": "RPC1", "endpoint": "10.0.0.3:50052", "layers": 10},
        ]});
        assert_eq!(split_processor(&split), "33% here, 67% RPC (2 workers)");
        assert_eq!(split_processor(&serde_json::json!({})), "-");
    }

    #[test]
    fn processor_column() {
        assert_eq!(processor(Some(100), Some(0)), "100% CPU");
        assert_eq!(processor(Some(100), Some(100)), "100% GPU");
        assert_eq!(processor(Some(100), Some(25)), "75%/25% CPU/GPU");
        assert_eq!(processor(None, Some(0)), "-");
    }

    #[test]
    fn table_columns_line_up() {
        let mut out = Vec::new();
        let rows = [[
            "a-long-model-name".to_owned(),
            "98.0 MB".to_owned(),
            "100% CPU".to_owned(),
            "512".to_owned(),
            "4 minutes from now".to_owned(),
        ]];
        write_table(
            &mut out,
            ["NAME", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"],
            &rows,
        )
        .expect("write");
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME                SIZE      PROCESSOR   CONTEXT   UNTIL"
        );
        assert_eq!(
            lines[1],
            "a-long-model-name   98.0 MB   100% CPU    512       4 minutes from now"
        );
    }
}
