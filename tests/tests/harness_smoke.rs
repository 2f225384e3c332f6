//! Smoke test of the harness itself: fresh databases are real, reachable and distinct.

use std::time::Instant;

#[tokio::test]
async fn fresh_databases_are_distinct() -> anyhow::Result<()> {
    let started = Instant::now();
    let a = lanes_tests::fresh_database().await?;
    let first = started.elapsed();
    let started = Instant::now();
    let b = lanes_tests::fresh_database().await?;
    let second = started.elapsed();
    eprintln!("first fresh database: {first:?}, second: {second:?}");
    assert_ne!(a.name, b.name);

    let mut seen = Vec::new();
    for db in [&a, &b] {
        let pool = sqlx::PgPool::connect(&db.url).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await?;
        assert_eq!(one, 1);
        let current: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&pool)
            .await?;
        assert_eq!(current, db.name);
        seen.push(current);
        pool.close().await;
    }
    assert_ne!(seen[0], seen[1]);
    Ok(())
}

#[tokio::test]
async fn child_processes_are_logged_signalled_and_awaited() -> anyhow::Result<()> {
    use std::path::Path;
    use std::time::Duration;

    let err = lanes_tests::bin_path("no-such-lanes-binary").expect_err("binary must be missing");
    assert!(
        err.to_string().contains("cargo build --workspace --bins"),
        "{err}"
    );

    // Stock system binaries stand in for the project's, so the harness is checked on its own.
    let port = lanes_tests::free_port();
    let script = concat!(
        "echo started-$LANES_SMOKE; ",
        "trap 'echo got-term; exit 7' TERM; ",
        "while :; do sleep 0.05; done",
    );
    let mut sh = lanes_tests::spawn(
        "sh",
        Path::new("/bin/sh"),
        &["-c".to_owned(), script.to_owned()],
        &[("LANES_SMOKE".to_owned(), "1".to_owned())],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        sh.try_wait()?.is_none(),
        "sh exited early:\n{}",
        sh.log_tail(10)
    );
    sh.signal(lanes_tests::Signal::SIGTERM)?;
    let status = sh.wait_exit(Duration::from_secs(5)).await?;
    assert_eq!(status.code(), Some(7), "log:\n{}", sh.log_tail(10));
    let log = std::fs::read_to_string(sh.log_path())?;
    assert!(
        log.contains("started-1") && log.contains("got-term"),
        "{log}"
    );

    let err = lanes_tests::wait_for_tcp(
        format!("127.0.0.1:{port}").parse()?,
        Duration::from_millis(100),
    )
    .await
    .expect_err("nothing listens on the port");
    assert!(err.to_string().contains("within"), "{err}");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    lanes_tests::wait_for_tcp(listener.local_addr()?, Duration::from_secs(1)).await?;

    let mut sleeper =
        lanes_tests::spawn("sleep", Path::new("/bin/sleep"), &["30".to_owned()], &[]).await?;
    sleeper.kill9().await;
    let status = sleeper.wait_exit(Duration::from_secs(1)).await?;
    assert!(!status.success());
    Ok(())
}
