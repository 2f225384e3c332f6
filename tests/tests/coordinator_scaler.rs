//! KEDA's external scaler served by the coordinator (`externalscaler.ExternalScaler`), called
//! directly as KEDA would: the count of jobs that need an agent (ready and running, not
//! delayed, not waiting behind their lane's head, not in a paused queue), the per-queue
//! filter, IsActive, StreamIsActive, the metric spec, and bad trigger metadata.

use lanes_proto::externalscaler as ks;
use lanes_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use lanes_proto::v1 as pb;
use lanes_tests::jobs::*;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

type Keda = ExternalScalerClient<Channel>;

/// A ScaledObjectRef with trigger metadata `pairs`.
fn object(pairs: &[(&str, &str)]) -> ks::ScaledObjectRef {
    ks::ScaledObjectRef {
        name: "agents".into(),
        namespace: "lanes".into(),
        scaler_metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// GetMetrics for `queues` (empty: all).
async fn count(keda: &Keda, queues: &str) -> anyhow::Result<i64> {
    let req = ks::GetMetricsRequest {
        scaled_object_ref: Some(object(&[("queues", queues), ("targetJobsPerAgent", "1")])),
        metric_name: "s0-lanes_jobs".into(),
    };
    let r = keda.clone().get_metrics(req).await?.into_inner();
    assert_eq!(r.metric_values.len(), 1);
    let v = &r.metric_values[0];
    assert_eq!(v.metric_name, "s0-lanes_jobs");
    assert_eq!(v.metric_value_float, v.metric_value as f64);
    Ok(v.metric_value)
}

async fn active(keda: &Keda, queues: &str) -> anyhow::Result<bool> {
    let r = keda
        .clone()
        .is_active(object(&[("queues", queues)]))
        .await?;
    Ok(r.into_inner().result)
}

async fn next(stream: &mut Streaming<ks::IsActiveResponse>, within: Duration) -> Option<bool> {
    match tokio::time::timeout(within, stream.message()).await {
        Ok(Ok(Some(m))) => Some(m.result),
        _ => None,
    }
}

#[tokio::test]
async fn counts_ready_and_running_jobs_per_queue() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let keda = ExternalScalerClient::new(t.channel.clone());
    assert!(!active(&keda, "").await?, "an idle system is not active");
    assert_eq!(count(&keda, "").await?, 0);

    // imports: lane a holds two jobs, lane b one; a's head gets leased.
    for lane in ["a", "a", "b"] {
        t.add("imports", lane).await?;
    }
    let running = t.take("w1", "imports").await?;
    assert_eq!(running.lane, "a");
    // pdf: one due, one delayed by an hour.
    t.add("pdf", "").await?;
    t.add_req(job("pdf", "", "{}").delay(3600)).await?;

    // imports: a's head running + b's head ready; a's second job waits its turn.
    assert_eq!(count(&keda, "imports").await?, 2);
    // pdf: the delayed job does not count.
    assert_eq!(count(&keda, "pdf").await?, 1);
    assert_eq!(count(&keda, " imports , pdf ").await?, 3);
    assert_eq!(count(&keda, "").await?, 3);
    assert_eq!(count(&keda, "nothing_here").await?, 0);
    assert!(active(&keda, "imports").await?);
    assert!(!active(&keda, "nothing_here").await?);

    // A paused queue's ready jobs need no agent; running ones still do.
    t.admin
        .clone()
        .pause_queue(pb::PauseQueueRequest {
            queue: "imports".into(),
        })
        .await?;
    assert_eq!(count(&keda, "imports").await?, 1);
    // Once the running job completes, the paused queue needs no agent at all.
    t.complete(&running).await?;
    assert_eq!(count(&keda, "imports").await?, 0);
    assert!(!active(&keda, "imports").await?);
    Ok(())
}

#[tokio::test]
async fn max_running_caps_the_ready_jobs_counted() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let keda = ExternalScalerClient::new(t.channel.clone());
    for _ in 0..5 {
        t.add("video", "").await?;
    }
    assert_eq!(count(&keda, "video").await?, 5);
    t.set("video", |r| r.max_running = Some(2)).await?;
    t.take("w1", "video").await?;
    // One running and room for one more: more agents would sit idle.
    assert_eq!(count(&keda, "video").await?, 2);
    Ok(())
}

#[tokio::test]
async fn stream_is_active_flips_when_work_arrives_and_ends() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let keda = ExternalScalerClient::new(t.channel.clone());
    let mut stream = keda
        .clone()
        .stream_is_active(object(&[("queues", "imports")]))
        .await?
        .into_inner();
    let soon = Duration::from_secs(5);
    assert_eq!(
        next(&mut stream, soon).await,
        Some(false),
        "the first value comes at once"
    );

    // A delayed job, or one in another queue, changes nothing.
    t.add_req(job("imports", "", "{}").delay(3600)).await?;
    t.add("other", "").await?;
    assert_eq!(next(&mut stream, Duration::from_millis(800)).await, None);

    t.add("imports", "resto-1").await?;
    assert_eq!(next(&mut stream, soon).await, Some(true));
    // Still active while the job runs; inactive once it is done.
    let j = t.take("w1", "imports").await?;
    assert_eq!(next(&mut stream, Duration::from_millis(800)).await, None);
    t.complete(&j).await?;
    assert_eq!(next(&mut stream, soon).await, Some(false));
    Ok(())
}

#[tokio::test]
async fn metric_spec_carries_the_target_and_bad_metadata_is_refused() -> anyhow::Result<()> {
    let t = Setup::start(&[]).await?;
    let keda = ExternalScalerClient::new(t.channel.clone());
    let spec = |pairs: &[(&str, &str)]| {
        let keda = keda.clone();
        let o = object(pairs);
        async move { keda.clone().get_metric_spec(o).await }
    };
    let r = spec(&[("queues", "imports"), ("targetJobsPerAgent", "3")])
        .await?
        .into_inner();
    assert_eq!(r.metric_specs.len(), 1);
    let s = &r.metric_specs[0];
    assert_eq!(
        (s.metric_name.as_str(), s.target_size, s.target_size_float),
        ("lanes_jobs", 3, 3.0)
    );
    let default = spec(&[]).await?.into_inner();
    assert_eq!(default.metric_specs[0].target_size, 1);

    for bad in [
        [("targetJobsPerAgent", "many")],
        [("targetJobsPerAgent", "0")],
        [("queues", "imports,bad name")],
    ] {
        assert_eq!(code(spec(&bad).await), Code::InvalidArgument, "{bad:?}");
        let is = keda.clone().is_active(object(&bad)).await;
        assert_eq!(code(is), Code::InvalidArgument, "{bad:?}");
        let req = ks::GetMetricsRequest {
            scaled_object_ref: Some(object(&bad)),
            metric_name: "lanes_jobs".into(),
        };
        assert_eq!(
            code(keda.clone().get_metrics(req).await),
            Code::InvalidArgument
        );
        let stream = keda.clone().stream_is_active(object(&bad)).await;
        assert_eq!(code(stream.map(|_| ())), Code::InvalidArgument);
    }
    Ok(())
}

#[tokio::test]
async fn the_scaler_needs_no_token_when_the_other_services_do() -> anyhow::Result<()> {
    let t = Setup::start(&["--admin-tokens", "s3cret", "--agent-tokens", "a9ent"]).await?;
    let keda = ExternalScalerClient::new(t.channel.clone());
    assert!(!active(&keda, "").await?);
    assert_eq!(count(&keda, "").await?, 0);
    // The Lanes services still refuse calls without a token.
    let stats = t
        .client
        .clone()
        .get_stats(pb::GetStatsRequest::default())
        .await;
    assert_eq!(code(stats), Code::Unauthenticated);
    Ok(())
}
