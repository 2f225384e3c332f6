//! `externalscaler.ExternalScaler`: KEDA's external scaler, so KEDA sizes the agent
//! Deployment by the work (down to zero). The metric is the number of jobs that need an
//! agent: running ones plus ready ones (`db::gauges::needing_agent`), so agents are never
//! scaled away under a running job, and delayed jobs do not wake any.
//!
//! Read-only and served without a token: KEDA's external trigger cannot send one, and the
//! service reveals only job counts. Must never: change anything.

use super::Ctx;
use crate::db::gauges;
use crate::error::Error;
use crate::validate;
use lanes_proto::externalscaler as pb;
use lanes_proto::externalscaler::external_scaler_server::ExternalScaler;
use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The one metric this scaler serves.
pub const METRIC: &str = "lanes_jobs";
/// Largest accepted `targetJobsPerAgent`.
const MAX_TARGET: i64 = 1_000_000;

/// The KEDA-facing service.
pub struct Scaler {
    ctx: Ctx,
    poll: Duration,
    stop: CancellationToken,
}

impl Scaler {
    /// Builds the service; StreamIsActive re-counts every `poll` and ends at `stop`.
    pub fn new(ctx: Ctx, poll: Duration, stop: CancellationToken) -> Self {
        Scaler { ctx, poll, stop }
    }
}

/// What a ScaledObject's trigger metadata asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trigger {
    /// Queues to count (empty: all).
    queues: Vec<String>,
    /// Jobs per agent replica.
    target: i64,
}

fn trigger(r: Option<&pb::ScaledObjectRef>) -> Result<Trigger, Error> {
    let empty = HashMap::new();
    let meta = r.map_or(&empty, |r| &r.scaler_metadata);
    let queues: Vec<String> = meta
        .get("queues")
        .map(|q| {
            q.split(',')
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    for q in &queues {
        validate::queue_name(q)?;
    }
    let target = match meta.get("targetJobsPerAgent").map(|t| t.trim()) {
        None | Some("") => 1,
        Some(t) => t
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_TARGET).contains(n))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "targetJobsPerAgent is {t:?}; allowed a whole number 1-{MAX_TARGET}"
                ))
            })?,
    };
    Ok(Trigger { queues, target })
}

async fn count(ctx: &Ctx, t: &Trigger) -> Result<i64, Error> {
    gauges::needing_agent(&ctx.pool, &t.queues).await
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    #[tracing::instrument(skip_all, fields(scaled_object = %req.get_ref().name))]
    async fn is_active(
        &self,
        req: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::IsActiveResponse>, Status> {
        let t = trigger(Some(req.get_ref()))?;
        let n = count(&self.ctx, &t).await?;
        Ok(Response::new(pb::IsActiveResponse { result: n > 0 }))
    }

    type StreamIsActiveStream = ActiveStream;

    #[tracing::instrument(skip_all, fields(scaled_object = %req.get_ref().name))]
    async fn stream_is_active(
        &self,
        req: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let t = trigger(Some(req.get_ref()))?;
        let (tx, rx) = mpsc::channel(1);
        // Detached: it ends when KEDA disconnects (the receiver goes), a count fails (the
        // error is sent and KEDA reconnects), or the coordinator stops.
        tokio::spawn(watch(self.ctx.clone(), t, self.poll, self.stop.clone(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, fields(scaled_object = %req.get_ref().name))]
    async fn get_metric_spec(
        &self,
        req: Request<pb::ScaledObjectRef>,
    ) -> Result<Response<pb::GetMetricSpecResponse>, Status> {
        let t = trigger(Some(req.get_ref()))?;
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: METRIC.into(),
                target_size: t.target,
                target_size_float: t.target as f64,
            }],
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_metrics(
        &self,
        req: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let r = req.into_inner();
        let t = trigger(r.scaled_object_ref.as_ref())?;
        let n = count(&self.ctx, &t).await?;
        let metric_name = if r.metric_name.is_empty() {
            METRIC.into()
        } else {
            r.metric_name
        };
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue {
                metric_name,
                metric_value: n,
                metric_value_float: n as f64,
            }],
        }))
    }
}

/// Sends IsActive now and on every change, re-counting every `poll`.
async fn watch(
    ctx: Ctx,
    t: Trigger,
    poll: Duration,
    stop: CancellationToken,
    tx: mpsc::Sender<Result<pb::IsActiveResponse, Status>>,
) {
    let mut ticker = tokio::time::interval(poll);
    let mut last = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            _ = ticker.tick() => {}
        }
        let active = match count(&ctx, &t).await {
            Ok(n) => n > 0,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if last != Some(active) {
            last = Some(active);
            if tx
                .send(Ok(pb::IsActiveResponse { result: active }))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> pb::ScaledObjectRef {
        pb::ScaledObjectRef {
            scaler_metadata: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn metadata_is_read_and_checked() {
        let t = trigger(Some(&meta(&[
            ("queues", " a, b ,,"),
            ("targetJobsPerAgent", "3"),
        ])));
        assert_eq!(
            t.ok(),
            Some(Trigger {
                queues: vec!["a".into(), "b".into()],
                target: 3
            })
        );
        let t = trigger(None).ok();
        assert_eq!(t.map(|t| (t.queues.len(), t.target)), Some((0, 1)));
        for bad in ["x", "0", "-1", "1.5", "99999999"] {
            let t = trigger(Some(&meta(&[("targetJobsPerAgent", bad)])));
            assert!(matches!(t, Err(Error::Invalid(_))), "{bad}");
        }
        let t = trigger(Some(&meta(&[("queues", "ok,no spaces")])));
        assert!(matches!(t, Err(Error::InvalidField { .. })));
    }
}
