//! iap-emulator
