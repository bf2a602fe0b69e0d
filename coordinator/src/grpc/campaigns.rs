//! The user-facing service: campaigns, results and the model registry.

use crate::error::Error;
use crate::store::campaigns::is_terminal;
use crate::store::results::ResultFilter;
use crate::store::Store;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vephys_proto::v1::campaigns_server::Campaigns;
use vephys_proto::v1::*;

/// Results per streamed page.
const RESULTS_PAGE: i64 = 500;

/// Open streams (watches and result queries) one coordinator serves at once, by default.
pub const DEFAULT_MAX_STREAMS: usize = 256;

pub struct CampaignsService {
    store: Arc<Store>,
    /// How often a watch looks for progress.
    watch_interval: Duration,
    /// One permit per open stream: each polls the database, so their number is bounded.
    streams: Arc<Semaphore>,
    max_streams: usize,
}

impl CampaignsService {
    pub fn new(store: Arc<Store>, watch_interval: Duration) -> Self {
        Self::with_max_streams(store, watch_interval, DEFAULT_MAX_STREAMS)
    }

    /// A service that serves at most `max_streams` streams at once and refuses more with
    /// RESOURCE_EXHAUSTED.
    pub fn with_max_streams(
        store: Arc<Store>,
        watch_interval: Duration,
        max_streams: usize,
    ) -> Self {
        Self {
            store,
            watch_interval,
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
        }
    }

    /// A permit for one more stream, held until the stream ends.
    fn open_stream(&self, what: &'static str) -> Result<OwnedSemaphorePermit, Error> {
        self.streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy {
                what,
                limit: self.max_streams,
            })
    }
}

/// Page sizes: the default when a request asks for 0, and the most one page holds.
fn page_size(asked: u32, default: i64, most: i64) -> i64 {
    match asked {
        0 => default,
        n => i64::from(n).min(most),
    }
}

/// The id a page starts after: 0 for the first page, else the token the last page gave.
fn page_after(token: &str) -> Result<i64, Error> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| {
        Error::invalid(
            "page request",
            "page_token",
            "is not a token this coordinator gave; pass the next_page_token of the previous page, or none",
        )
    })
}

/// The token of the page after one that ended at `last` (and held `len` of `limit` items).
fn next_token(last: Option<i64>, len: usize, limit: i64) -> String {
    match last {
        Some(id) if len as i64 >= limit => id.to_string(),
        _ => String::new(),
    }
}

type ServerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Campaigns for CampaignsService {
    async fn submit_campaign(
        &self,
        request: Request<SubmitCampaignRequest>,
    ) -> Result<Response<SubmitCampaignResponse>, Status> {
        let submitted = self
            .store
            .submit_campaign(&request.get_ref().spec_toml)
            .await?;
        let campaign = self.store.campaign(submitted.campaign_id).await?;
        Ok(Response::new(SubmitCampaignResponse {
            campaign: Some(campaign),
            jobs_created: submitted.jobs_created,
            existing: submitted.existing,
        }))
    }

    async fn get_campaign(
        &self,
        request: Request<GetCampaignRequest>,
    ) -> Result<Response<Campaign>, Status> {
        Ok(Response::new(
            self.store.campaign(request.get_ref().campaign_id).await?,
        ))
    }

    async fn list_campaigns(
        &self,
        request: Request<ListCampaignsRequest>,
    ) -> Result<Response<ListCampaignsResponse>, Status> {
        let r = request.get_ref();
        let limit = page_size(r.page_size, 100, 1000);
        let after = page_after(&r.page_token)?;
        let campaigns = self.store.list_campaigns_page(after, limit).await?;
        let next_page_token = next_token(campaigns.last().map(|c| c.id), campaigns.len(), limit);
        Ok(Response::new(ListCampaignsResponse {
            campaigns,
            next_page_token,
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let r = request.get_ref();
        let limit = page_size(r.page_size, 1000, 10_000);
        let after = page_after(&r.page_token)?;
        self.store.campaign(r.campaign_id).await?;
        let jobs = self.store.jobs_page(r.campaign_id, after, limit).await?;
        let next_page_token = next_token(jobs.last().map(|j| j.job_id), jobs.len(), limit);
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    type WatchCampaignStream = ServerStream<Campaign>;

    async fn watch_campaign(
        &self,
        request: Request<GetCampaignRequest>,
    ) -> Result<Response<Self::WatchCampaignStream>, Status> {
        let campaign_id = request.get_ref().campaign_id;
        let permit = self.open_stream("watch streams")?;
        // Fail fast on an unknown campaign instead of opening a stream that errors at once.
        let first = self.store.campaign(campaign_id).await?;
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let interval = self.watch_interval;
        tokio::spawn(async move {
            let _permit = permit; // released when the stream ends
            let mut last = None;
            let mut next: Result<Campaign, Error> = Ok(first);
            loop {
                let campaign = match next {
                    Ok(c) => Some(c),
                    // a database blip skips a beat; the watcher keeps its stream
                    Err(e) if e.is_transient() => None,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let terminal = campaign.as_ref().is_some_and(|c| is_terminal(&c.state));
                if let Some(campaign) = campaign.filter(|c| last.as_ref() != Some(c)) {
                    last = Some(campaign.clone());
                    if tx.send(Ok(campaign)).await.is_err() {
                        return; // the watcher hung up
                    }
                }
                if terminal {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = tx.closed() => return,
                }
                next = store.campaign(campaign_id).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_campaign(
        &self,
        request: Request<CancelCampaignRequest>,
    ) -> Result<Response<Campaign>, Status> {
        Ok(Response::new(
            self.store
                .cancel_campaign(request.get_ref().campaign_id)
                .await?,
        ))
    }

    type QueryResultsStream = ServerStream<JobResult>;

    async fn query_results(
        &self,
        request: Request<QueryResultsRequest>,
    ) -> Result<Response<Self::QueryResultsStream>, Status> {
        let r = request.into_inner();
        let permit = self.open_stream("result streams")?;
        self.store.campaign(r.campaign_id).await?;
        let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
        let filter = ResultFilter {
            campaign_id: r.campaign_id,
            layer: non_empty(r.layer),
            filter: r.filter,
            probe: non_empty(r.probe),
        };
        let (tx, rx) = mpsc::channel(RESULTS_PAGE as usize);
        let store = self.store.clone();
        tokio::spawn(async move {
            let _permit = permit; // released when the stream ends
            let mut after = 0;
            loop {
                let page = match store.results_page(&filter, after, RESULTS_PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let Some(last) = page.last() else { return };
                after = last.job_id;
                for result in page {
                    if tx.send(Ok(result)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn register_model(
        &self,
        request: Request<RegisterModelRequest>,
    ) -> Result<Response<Model>, Status> {
        let model = request.into_inner().model.ok_or_else(|| {
            Error::invalid("model", "model", "is missing; send the model description")
        })?;
        self.store.register_model(&model).await?;
        let stored = self.store.model(&model.name).await?.unwrap_or(model);
        Ok(Response::new(stored))
    }

    async fn list_models(
        &self,
        _: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(ListModelsResponse {
            models: self.store.list_models().await?,
        }))
    }
}
