//! `acr-broker doctor`.
