//! iap-tower
