//! A minimal HTTP/1.1 client for the console tests: one request per connection
//! (`Connection: close`), headers and body as sent, so a test sees exactly what a
//! browser or an attacker's script would get.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased; repeated headers joined with "\n".
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// One request to `address` (host:port); `host` overrides the Host header.
pub async fn request(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Result<Reply> {
    let mut stream =
        tokio::net::TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {address}\r\n"));
    }
    for (key, value) in headers {
        text.push_str(&format!("{key}: {value}\r\n"));
    }
    if let Some(body) = body {
        text.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    text.push_str("\r\n");
    if let Some(body) = body {
        text.push_str(body);
    }
    stream.write_all(text.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .context("the console did not answer within 60 s")??;
    parse(&raw)
}

pub async fn get(address: &str, path: &str, cookie: Option<&str>) -> Result<Reply> {
    match cookie {
        Some(cookie) => request(address, "GET", path, &[("Cookie", cookie)], None).await,
        None => request(address, "GET", path, &[], None).await,
    }
}

pub async fn post(address: &str, path: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Result<Reply> {
    let body = encode_form(form);
    match cookie {
        Some(cookie) => request(address, "POST", path, &[("Cookie", cookie)], Some(&body)).await,
        None => request(address, "POST", path, &[], Some(&body)).await,
    }
}

/// `application/x-www-form-urlencoded`.
pub fn encode_form(form: &[(&str, &str)]) -> String {
    form.iter().map(|(k, v)| format!("{}={}", percent(k), percent(v))).collect::<Vec<_>>().join("&")
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn parse(raw: &[u8]) -> Result<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers in the response")?;
    let head = std::str::from_utf8(&raw[..split])?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("empty response")?;
    let status: u16 = status_line.split(' ').nth(1).context("no status code")?.parse()?;
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for line in lines {
        let Some((key, value)) = line.split_once(':') else { bail!("bad header line {line:?}") };
        headers
            .entry(key.trim().to_ascii_lowercase())
            .and_modify(|v| {
                v.push('\n');
                v.push_str(value.trim());
            })
            .or_insert_with(|| value.trim().to_string());
    }
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        body = dechunk(&body)?;
    }
    Ok(Reply { status, headers, body: String::from_utf8(body)? })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).context("short chunk")?);
        data = data.get(size + 2..).context("short chunk")?;
    }
}

/// The `name=value` of a `Set-Cookie` header, for sending back as `Cookie`.
pub fn session_cookie(reply: &Reply) -> Option<String> {
    reply.header("set-cookie").and_then(|c| c.split(';').next()).map(str::to_string)
}

/// The CSRF token in a page's forms.
pub fn csrf_of(page: &str) -> Option<String> {
    let start = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].to_string())
}

/// Logs in to the console at `address` with `token`; returns the session cookie.
pub async fn login(address: &str, token: &str) -> Result<String> {
    let reply = post(address, "/login", None, &[("token", token)]).await?;
    if reply.status != 303 {
        bail!("login answered {}: {}", reply.status, reply.body);
    }
    session_cookie(&reply).context("login set no cookie")
}

/// The value of the metric line starting with `prefix` (name and labels).
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
