//! A headless Chromium driven over WebDriver (chromedriver started on a free port), and the
//! element helpers the admin page tests share: find by `data-testid`, wait for a text, click
//! through the page's periodic re-render, and a screenshot check.
//!
//! Needs Debian's `chromium` and `chromium-driver` (CI installs them); without them a test
//! fails with an install hint rather than skipping.
#![allow(dead_code)] // Each test file uses its own subset.

use anyhow::{Context as _, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use lanes_tests::procs::{self, ChildProc};
use serde_json::json;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// Long enough for the page's 3-second refresh to pick up a change made outside it.
pub const PAGE_WAIT: Duration = Duration::from_secs(12);

/// A headless Chromium session and the chromedriver serving it.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    _driver: ChildProc,
    _profile: tempfile::TempDir,
}

fn tool(env: &str, default: &str) -> anyhow::Result<String> {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_owned());
    if !Path::new(&path).is_file() {
        bail!(
            "{path} not found: the admin page test needs Chromium and chromedriver. Install them \
             with `apt-get update && apt-get install -y chromium chromium-driver` (or point {env} \
             at them)"
        );
    }
    Ok(path)
}

pub async fn browser() -> anyhow::Result<Browser> {
    let chromium = tool("LANES_CHROMIUM", "/usr/bin/chromium")?;
    let driver_bin = tool("LANES_CHROMEDRIVER", "/usr/bin/chromedriver")?;
    let port = procs::free_port();
    let args = vec![format!("--port={port}")];
    let driver = procs::spawn("chromedriver", Path::new(&driver_bin), &args, &[]).await?;
    let addr = format!("127.0.0.1:{port}").parse()?;
    if let Err(e) = procs::wait_for_tcp(addr, Duration::from_secs(20)).await {
        bail!("chromedriver did not start: {e}\n{}", driver.log_tail(20));
    }
    let profile = tempfile::tempdir()?;
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--no-first-run", "--disable-sync", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.path().display())],
        }
    });
    let caps = caps.as_object().cloned().context("capabilities")?;
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .with_context(|| format!("starting a Chromium session\n{}", driver.log_tail(20)))?;
    Ok(Browser {
        client,
        _driver: driver,
        _profile: profile,
    })
}

pub fn by(testid: &str) -> String {
    format!(r#"[data-testid="{testid}"]"#)
}

/// The text of the element with `testid`, or `None` while it does not exist.
pub async fn text(c: &Client, testid: &str) -> anyhow::Result<Option<String>> {
    match c.find(Locator::Css(&by(testid))).await {
        Ok(e) => match e.text().await {
            Ok(t) => Ok(Some(t)),
            // The page's refresh replaced the element between the find and the read.
            Err(e) if e.is_stale_element_reference() => Ok(None),
            Err(e) => Err(e.into()),
        },
        Err(e) if e.is_no_such_element() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Waits until the element with `testid` shows `want` (trimmed), for at most `PAGE_WAIT`.
pub async fn wait_text(c: &Client, testid: &str, want: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let got = text(c, testid).await?;
        if got.as_deref().map(str::trim) == Some(want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let banner = text(c, "error-banner").await?.unwrap_or_default();
            bail!(
                "{testid} shows {got:?}, not {want:?}, after {PAGE_WAIT:?} (page error: {banner:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tries `op` on the element with `testid` again when the page's 3-second refresh replaced
/// the element between finding and using it (a stale element reference).
pub async fn on_element<T>(
    c: &Client,
    testid: &str,
    op: impl AsyncFn(fantoccini::elements::Element) -> Result<T, fantoccini::error::CmdError>,
) -> anyhow::Result<T> {
    let mut tries = 0;
    loop {
        let e = c
            .find(Locator::Css(&by(testid)))
            .await
            .with_context(|| format!("finding {testid}"))?;
        match op(e).await {
            Err(e) if e.is_stale_element_reference() && tries < 5 => tries += 1,
            other => return other.with_context(|| format!("using {testid}")),
        }
    }
}

pub async fn displayed(c: &Client, testid: &str) -> anyhow::Result<bool> {
    on_element(c, testid, async |e| e.is_displayed().await).await
}

pub async fn click(c: &Client, testid: &str) -> anyhow::Result<()> {
    on_element(c, testid, async |e| e.click().await).await
}

pub async fn enter_key(c: &Client, key: &str) -> anyhow::Result<()> {
    let input = c.find(Locator::Css(&by("key-input"))).await?;
    input.clear().await?;
    input.send_keys(key).await?;
    click(c, "key-submit").await
}

/// Waits until `check` holds, for at most `PAGE_WAIT`; `what` names it in the error.
pub async fn wait_until(
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{what}: not after {PAGE_WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of attribute `attr` of every element matching `css`, in document order.
pub async fn attrs(c: &Client, css: &str, attr: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(css)).await? {
        match e.attr(attr).await {
            Ok(v) => out.extend(v),
            // Re-rendered meanwhile: the caller retries.
            Err(e) if e.is_stale_element_reference() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Takes a screenshot, writes it to the temp dir, and checks it shows a page: a PNG of the
/// window's size whose pixels are not one flat colour. Returns its path.
pub async fn screenshot(c: &Client, name: &str) -> anyhow::Result<std::path::PathBuf> {
    let png = c.screenshot().await?;
    let path = std::env::temp_dir().join(format!("{name}-{}.png", std::process::id()));
    std::fs::write(&path, &png)?;
    let (width, height, pixels) = png_pixels(&png).context("decoding the screenshot")?;
    anyhow::ensure!(
        width >= 800 && height >= 600,
        "screenshot is {width}x{height}"
    );
    let mut seen = [false; 256];
    for b in &pixels {
        seen[usize::from(*b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    // A blank window filters down to a handful of byte values; text, tables and charts give
    // most of them.
    anyhow::ensure!(
        distinct >= 64,
        "screenshot {} looks blank ({distinct} distinct byte values)",
        path.display()
    );
    Ok(path)
}

/// Width, height and the inflated scanlines of a PNG (no unfiltering: enough to tell a
/// blank image from a page).
fn png_pixels(png: &[u8]) -> anyhow::Result<(u32, u32, Vec<u8>)> {
    anyhow::ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (mut at, mut size, mut idat) = (8, None, Vec::new());
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into()?) as usize;
        let kind = &png[at + 4..at + 8];
        let data = png.get(at + 8..at + 8 + len).context("truncated chunk")?;
        match kind {
            b"IHDR" => {
                size = Some((
                    u32::from_be_bytes(data[0..4].try_into()?),
                    u32::from_be_bytes(data[4..8].try_into()?),
                ))
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let (w, h) = size.context("no IHDR")?;
    let mut pixels = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut pixels)?;
    Ok((w, h, pixels))
}
