//! Lists the coordinator serves a page at a time, read whole.

use anyhow::Result;
use vephys_proto::v1::{Campaign, ListCampaignsRequest};

use crate::Client;

/// Every campaign, oldest first.
pub async fn campaigns(client: &mut Client) -> Result<Vec<Campaign>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_campaigns(ListCampaignsRequest {
                page_size: 1000,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.campaigns);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}
