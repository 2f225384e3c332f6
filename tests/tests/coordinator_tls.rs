//! Optional TLS: with `--tls-cert`/`--tls-key` the coordinator serves gRPC over TLS that a
//! client trusting the certificate can use, and a plaintext client cannot.

use lanes_proto::v1 as pb;
use lanes_proto::v1::client_service_client::ClientServiceClient;
use lanes_tests::{Coordinator, fresh_database};
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[tokio::test]
async fn serves_grpc_over_tls_when_given_a_certificate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    // A throwaway CA and a server certificate for localhost it signs, made with openssl.
    let (ca_key, ca) = (dir.path().join("ca-key.pem"), dir.path().join("ca.pem"));
    let csr = dir.path().join("server.csr");
    let ext = dir.path().join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )?;
    let p = |p: &std::path::Path| p.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=lanes-test-ca",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ])?;
    let db = fresh_database().await?;
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let coord =
        Coordinator::start(&db.url, &["--tls-cert", &cert_arg, "--tls-key", &key_arg]).await?;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ca)?))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", coord.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    let stats = ClientServiceClient::new(channel)
        .get_stats(pb::GetStatsRequest::default())
        .await?;
    assert_eq!(stats.into_inner().agents_connected, 0);

    // The same port refuses to speak plaintext gRPC.
    let mut plain = coord.client().await?;
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        plain.get_stats(pb::GetStatsRequest::default()),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a plaintext call must not succeed on the TLS port"
    );
    Ok(())
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new("openssl").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
