//! The client side of the coordinator's bearer-token auth: adds `authorization: Bearer …` to
//! every call when a token is configured. Users' and workers' clients share it.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Request, Status};

#[derive(Clone, Debug, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    /// `None` sends no header (a coordinator without tokens). Fails when the token has
    /// characters a header cannot carry.
    pub fn new(token: Option<&str>) -> Result<BearerToken, String> {
        match token {
            None => Ok(BearerToken(None)),
            Some(t) => format!("Bearer {t}")
                .parse()
                .map(|v| BearerToken(Some(v)))
                .map_err(|_| "the token has characters not allowed in a header".to_string()),
        }
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}
