//! DHIS2 wire formats for ClinicBox: what goes over the wire to tablets and the national
//! server, validated on the way in and formatted exactly on the way out. No business logic.
//!
//! - [`Uid`]: 11-character DHIS2 identifiers, with a generator.
//! - [`Dhis2Timestamp`], [`ServerTimeZone`]: `yyyy-MM-ddTHH:mm:ss.SSS` in the server zone.
//! - [`Period`]: period ids such as `202401`, `2024W5`, `2024Q1`.
//! - [`WebMessage`]: every error and write acknowledgement.
//! - [`ImportReport`]: the answer to a metadata import.
//! - [`SystemInfo`], [`LoginConfig`]: what tablets check before they log in.
//! - [`sharing`]: access strings, sharing objects, computed `access`.
//! - [`schema`]: the metadata types, their klass names and references.
//! - [`user`]: user objects in metadata packages.
//! - [`tracker`]: tracker payloads, export objects, import reports, jobs, files, reserved values.
//! - [`value_type`]: the one DHIS2 value-type checker (tracker and aggregate values), and the
//!   excerpt every error message uses when it echoes a payload's text.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aggregate;
pub mod import_report;
pub mod period;
pub mod schema;
pub mod sharing;
pub mod system_info;
pub mod timestamp;
pub mod tracker;
pub mod uid;
pub mod user;
pub mod value_type;
pub mod webmessage;

pub use import_report::{ErrorReport, ImportReport, ImportStatus, ObjectReport, Stats, TypeReport};
pub use period::{Period, PeriodError, PeriodType};
pub use sharing::{Access, AccessString, Sharing};
pub use system_info::{DHIS2_VERSION, LoginConfig, LoginPageLayout, SystemInfo};
pub use timestamp::{Dhis2Timestamp, ServerTimeZone, TimestampError};
pub use uid::{Uid, UidError};
pub use user::{UserPayload, UserPayloadError};
pub use value_type::ValueError;
pub use webmessage::{Status, WebMessage};
