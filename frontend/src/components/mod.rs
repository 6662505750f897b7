//! View components.

mod connection_status;

pub use connection_status::ConnectionStatus;
