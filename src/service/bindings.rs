//! The proxy binding RPCs.

use crate::error::Error;
use crate::pb;
use crate::policy;
use crate::store::{BindingQuery, Store, StoreError};

pub(super) async fn create(
    store: &impl Store,
    request: pb::CreateProxyBindingRequest,
) -> Result<pb::CreateProxyBindingResponse, Error> {
    let problems = policy::request::check_create_binding_request(&request);
    if !problems.is_empty() {
        return Err(Error::InvalidRequest(problems));
    }
    let binding = request.binding.unwrap_or_default();
    let (source, destination) = (
        binding.source.unwrap_or_default(),
        binding.destination.unwrap_or_default(),
    );
    let created = store
        .create_binding(source.clone(), destination.clone(), binding.implicit)
        .await
        .map_err(|error| match error {
            StoreError::AlreadyExists => Error::BindingExists {
                source_entitlement: source,
                destination,
            },
            other => Error::from(other),
        })?;
    Ok(pb::CreateProxyBindingResponse {
        binding: Some(created.into_binding()),
    })
}

pub(super) async fn delete(
    store: &impl Store,
    request: pb::DeleteProxyBindingRequest,
) -> Result<pb::DeleteProxyBindingResponse, Error> {
    let problems = policy::request::check_delete_binding_request(&request);
    if !problems.is_empty() {
        return Err(Error::InvalidRequest(problems));
    }
    let (source, destination) = (
        request.source.unwrap_or_default(),
        request.destination.unwrap_or_default(),
    );
    store
        .delete_binding(source.clone(), destination.clone())
        .await
        .map_err(|error| match error {
            StoreError::NotFound => Error::BindingNotFound {
                source_entitlement: source,
                destination,
            },
            StoreError::InUse { dependents } => Error::BindingInUse {
                source_entitlement: source,
                destination,
                dependents,
            },
            other => Error::from(other),
        })?;
    Ok(pb::DeleteProxyBindingResponse {})
}

pub(super) async fn list(
    store: &impl Store,
    request: pb::ListProxyBindingsRequest,
) -> Result<pb::ListProxyBindingsResponse, Error> {
    let page =
        policy::request::parse_list_bindings_request(&request).map_err(Error::InvalidRequest)?;
    // One more than the page holds tells whether another page follows.
    let query = BindingQuery {
        source: page.source.clone(),
        destination: page.destination.clone(),
        after: page.after.clone(),
        limit: page.size + 1,
    };
    let mut bindings = store.list_bindings(query).await?;
    let next_page_token = if bindings.len() > page.size {
        bindings.truncate(page.size);
        let last = bindings.last().expect("a full page");
        policy::request::next_page_token(&page, &last.source, &last.destination)
    } else {
        String::new()
    };
    Ok(pb::ListProxyBindingsResponse {
        bindings: bindings.into_iter().map(|b| b.into_binding()).collect(),
        next_page_token,
    })
}
