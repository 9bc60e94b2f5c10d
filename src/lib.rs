//! rgrid-mount: a FUSE filesystem over the rgrid artifact store, an S3-compatible bucket.
//!
//! A request flows down through one layer per module, and data flows back up:
//!
//! ```text
//! kernel ─▶ fuse       FuseAdapter: fuser callbacks → RgridFs calls → replies/errnos
//!           fs         RgridFs: operations, open handles, attributes, the errno table
//!           namespace  Namespace: inodes ↔ keys/prefixes, lookup, listings, TTL cache,
//!                      the work view, expired objects hidden
//!           view       FileReader: plain or gzip-decoded content, SHA-256 checked
//!           cache      ObjectCache: whole objects on local disk, across mounts
//!           readahead  ReadEngine/ReadAhead: windows of parallel range GETs for
//!                      sequential readers, a shared block cache for random ones
//!           upload     Spool, UploadJournal, Uploader: crash-safe uploads at close or
//!                      queued (write-back), one per key at a time, directory renames
//!           object     ObjectClient trait: S3Client (aws-sdk-s3), MemoryClient (tests)
//!           ─▶ S3 endpoint: MinIO, S3, or `store` (the embedded server)
//! ```
//!
//! `artifact` holds the store's metadata contract (x-amz-meta-rgrid-*, key layout, file
//! formats) and `retention` when objects expire; both are read by several layers.
//! `config` validates the command line into each layer's settings; `logging` sets up
//! tracing; `metrics` names what `--metrics-addr` serves; `service` tells systemd how the mount stands; `status` is the client of a
//! mount's control channel (`rgrid-mount status`, `rgrid-mount sync`). Only `fuse` imports fuser and only `object::s3` imports the AWS SDK.

pub mod artifact;
pub mod cache;
pub mod config;
pub mod fs;
pub mod fuse;
pub mod logging;
pub mod metrics;
pub mod namespace;
pub mod object;
pub mod readahead;
pub mod retention;
pub mod service;
pub mod status;
pub mod store;
pub mod upload;
pub mod view;
