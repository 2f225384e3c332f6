//! Standard Webhooks signatures checked independently (this crate's own HMAC code, not the
//! coordinator's), for the tests that receive webhooks with [`crate::receiver`].

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;

pub use crate::receiver::{Got, Receiver};

/// The signing key the webhook tests configure.
pub const KEY: &[u8] = b"lanes-events-test-key-0123456789";

/// [`KEY`] in the `whsec_<base64>` form the coordinator takes.
pub fn secret() -> String {
    format!("whsec_{}", STANDARD.encode(KEY))
}

/// Verifies a Standard Webhooks signature with this test's own HMAC code.
pub fn verify(got: &Got) -> anyhow::Result<()> {
    let id = got.header("webhook-id");
    let ts = got.header("webhook-timestamp");
    let ts_n: i64 = ts.parse().context("webhook-timestamp is not a number")?;
    let now = chrono_now();
    anyhow::ensure!(
        (ts_n - now).abs() < 300,
        "timestamp {ts_n} is not now ({now})"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).context("hmac key")?;
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&got.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let header = got.header("webhook-signature");
    anyhow::ensure!(
        header.split(' ').any(|s| s == expected),
        "bad signature {header:?}, expected {expected:?}"
    );
    Ok(())
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
