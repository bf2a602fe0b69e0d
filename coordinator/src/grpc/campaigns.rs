//! The user-facing service: campaigns, results and the model registry.

use crate::error::Error;
use crate::store::campaigns::is_terminal;
use crate::store::results::ResultFilter;
use crate::store::Store;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use vephys_proto::v1::campaigns_server::Campaigns;
use vephys_proto::v1::*;

/// Results per streamed page.
const RESULTS_PAGE: i64 = 500;

pub struct CampaignsService {
    store: Arc<Store>,
    /// How often a watch looks for progress.
    watch_interval: Duration,
}

impl CampaignsService {
    pub fn new(store: Arc<Store>, watch_interval: Duration) -> Self {
        Self {
            store,
            watch_interval,
        }
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
        _: Request<ListCampaignsRequest>,
    ) -> Result<Response<ListCampaignsResponse>, Status> {
        let campaigns = self.store.list_campaigns().await?;
        Ok(Response::new(ListCampaignsResponse { campaigns }))
    }

    type WatchCampaignStream = ServerStream<Campaign>;

    async fn watch_campaign(
        &self,
        request: Request<GetCampaignRequest>,
    ) -> Result<Response<Self::WatchCampaignStream>, Status> {
        let campaign_id = request.get_ref().campaign_id;
        // Fail fast on an unknown campaign instead of opening a stream that errors at once.
        let first = self.store.campaign(campaign_id).await?;
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        let interval = self.watch_interval;
        tokio::spawn(async move {
            let mut last = None;
            let mut next = Ok(first);
            loop {
                let campaign = match next {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let terminal = is_terminal(&campaign.state);
                if last.as_ref() != Some(&campaign) {
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
