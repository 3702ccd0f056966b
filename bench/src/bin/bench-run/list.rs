//! Listing the big store: every policy in pages of 1,000, following `next_page_token` until it is
//! empty, through the Rust client, three times.

use std::time::{Duration, Instant};

use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;

use crate::servers::Server;
use crate::{block_on, progress};

pub const PAGE_SIZE: i32 = 1000;
const LISTINGS: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub expected: u64,
    /// Per listing: the time for all its pages, the policies and the pages it returned.
    pub listings: Vec<(Duration, u64, u64)>,
}

pub fn run(server: &Server, expected: u64) -> Figures {
    let mut figures = Figures {
        expected,
        listings: Vec::new(),
    };
    block_on(async {
        // A page of 1,000 five-step policies is about 0.6 MB: under tonic's 4 MB default, but
        // a listing must not fail on it, so the limit is raised.
        let mut client = ProvisionPolicyServiceClient::connect(server.endpoint())
            .await
            .expect("connect")
            .max_decoding_message_size(64 << 20);
        for _ in 0..LISTINGS {
            let started = Instant::now();
            let (mut policies, mut pages, mut token) = (0u64, 0u64, String::new());
            loop {
                let page = client
                    .list_provision_policies(pb::ListProvisionPoliciesRequest {
                        app_id: String::new(),
                        page_size: PAGE_SIZE,
                        page_token: token,
                        consistency: None,
                    })
                    .await
                    .unwrap_or_else(|status| panic!("List: {status:?}"))
                    .into_inner();
                policies += page.policies.len() as u64;
                pages += 1;
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            let took = started.elapsed();
            progress(format!(
                "listed {policies} policies in {pages} pages in {:.0} ms",
                took.as_secs_f64() * 1000.0
            ));
            figures.listings.push((took, policies, pages));
        }
    });
    figures
}
