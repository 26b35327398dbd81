//! Signed updates, the part every path shares: a TUF repository, wherever it is (an HTTPS
//! mirror the uplink reaches, a folder the uplink staged on `/data`, a USB stick's
//! `clinicbox-update/`), verified against the metadata this box trusted last, with expiry
//! judged against a clock that may be wrong ([`ClockFloor`]), and the release it offers for
//! this board chosen only if it is newer than the one running ([`choose`]).
//!
//! A release is also published as [`chunks`], so a box downloads only what its running slot
//! lacks.
//!
//! Installing ([`install`]): a release's [`bundle`] written into the root slot the box does
//! not run from, and its boot entry ([`boot`]) written last; what happened across boots is
//! kept in [`state`].
//!
//! Publishing ([`publish`], run by the `clinicbox-publish` command) is the other side: signing
//! a release into a repository with the four TUF roles.

pub mod boot;
pub mod bundle;
pub mod chunks;
mod clock;
mod config;
pub mod delta;
mod error;
pub mod install;
pub mod publish;
mod record;
mod release;
pub mod seed;
pub mod state;
mod trust;
pub mod tryboot;

pub use clock::{ClockFloor, IMAGE_MANIFEST, clock_synchronised, release_built};
pub use config::{BootLoader, InstallConfig};
pub use error::UpdateError;
pub use record::Recording;
pub use release::{Release, choose, chunk_index, newer};
pub use trust::{MAX_METADATA_BYTES, Source, TargetFile, Verified, verify, verify_with};
