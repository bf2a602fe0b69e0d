//! How users' and workers' clients reach the coordinator: the endpoint for its URL, over TLS
//! with the public roots (and a private CA when given) for `https://`.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// The endpoint of the coordinator at `url`; `ca_cert` (PEM) is trusted besides the public
/// roots for an `https://` coordinator. Errors name the flag to fix.
pub fn endpoint(url: &str, ca_cert: Option<&Path>) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|_| {
        format!("--coordinator `{url}` is not a url; use e.g. http://127.0.0.1:7070")
    })?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let mut tls = ClientTlsConfig::new().with_webpki_roots();
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    endpoint
        .tls_config(tls)
        .map_err(|e| format!("--coordinator `{url}`: {e}"))
}
