//! The gRPC services: thin adapters from requests to the store. Store errors become statuses
//! through `From<Error> for Status` (in `error.rs`) via `?`.

pub mod campaigns;
pub mod workers;

pub use campaigns::CampaignsService;
pub use workers::WorkersService;
