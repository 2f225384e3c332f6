//! Test support for Lanes: throwaway PostgreSQL databases ([`pg`]) and the project's real
//! binaries run as child processes ([`procs`]), shared by all database and end-to-end tests.

pub mod agent;
pub mod consistency;
pub mod coordinator;
pub mod gateway;
pub mod health;
pub mod http_stub;
pub mod jobs;
pub mod load;
pub mod metrics;
pub mod n8n;
pub mod pg;
pub mod pg_private;
pub mod procs;
pub mod proxy;
pub mod receiver;
pub mod records;
pub mod webhooks;

pub use consistency::assert_lanes_agree;
pub use coordinator::Coordinator;
pub use nix::sys::signal::Signal;
pub use pg::{TestDb, fresh_database, pg_bin_dir};
pub use pg_private::{PrivateCluster, StopMode};
pub use procs::{ChildProc, bin_path, free_port, spawn, wait_for_tcp};
