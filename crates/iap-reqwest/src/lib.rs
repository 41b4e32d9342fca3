//! iap-reqwest
