//! The `aud` IAP signs for, in its three shapes.
//!
//! Each is what [`IapVerifierBuilder::audience`](crate::IapVerifierBuilder::audience)
//! takes. The numbers are the project *number* (not its ID) and, for a
//! load balancer, the backend service's numeric ID
//! (`gcloud compute backend-services describe NAME --global --format 'value(id)'`).
//!
//! ```
//! use iap_verify::audience;
//!
//! assert_eq!(
//!     audience::backend_service(123456789012u64, 4711u64),
//!     "/projects/123456789012/global/backendServices/4711"
//! );
//! assert_eq!(
//!     audience::app_engine(123456789012u64, "my-project"),
//!     "/projects/123456789012/apps/my-project"
//! );
//! assert_eq!(
//!     audience::cloud_run(123456789012u64, "europe-west1", "hello"),
//!     "/projects/123456789012/locations/europe-west1/services/hello"
//! );
//! ```

use std::fmt::Display;

/// A service behind an external HTTP(S) load balancer:
/// `/projects/NUMBER/global/backendServices/ID`.
pub fn backend_service(project_number: impl Display, backend_service_id: impl Display) -> String {
    format!("/projects/{project_number}/global/backendServices/{backend_service_id}")
}

/// An App Engine app: `/projects/NUMBER/apps/PROJECT_ID`.
pub fn app_engine(project_number: impl Display, project_id: impl Display) -> String {
    format!("/projects/{project_number}/apps/{project_id}")
}

/// A Cloud Run service with IAP enabled on the service itself:
/// `/projects/NUMBER/locations/REGION/services/NAME`.
pub fn cloud_run(
    project_number: impl Display,
    region: impl Display,
    service: impl Display,
) -> String {
    format!("/projects/{project_number}/locations/{region}/services/{service}")
}
