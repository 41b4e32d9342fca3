//! iap facade
