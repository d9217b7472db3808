//! svc-tower
