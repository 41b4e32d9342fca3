//! Who may pass beyond a valid signature: Workspace domains, email
//! domains, access levels.

use crate::IapIdentity;

/// Extra conditions an identity must meet, checked after the signature and
/// the claims. Empty (the default) allows every identity IAP let through.
///
/// ```
/// use iap_verify::Policy;
///
/// let policy = Policy::new()
///     .hosted_domains(["example.com"])
///     .access_levels(["accessPolicies/123/accessLevels/corp_devices"]);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    hosted_domains: Vec<String>,
    email_domains: Vec<String>,
    access_levels: Vec<String>,
}

impl Policy {
    /// A policy that allows every identity.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `hd` claim (the user's Google Workspace domain) must be one of
    /// these: users outside a Workspace (no `hd`) are refused.
    pub fn hosted_domains<I, T>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.hosted_domains = lowercase(domains);
        self
    }

    /// The `email` must be at one of these domains (compared without
    /// regard to case): identities without an email are refused.
    pub fn email_domains<I, T>(mut self, domains: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.email_domains = lowercase(domains);
        self
    }

    /// Every one of these access levels must be in the assertion's
    /// `google.access_levels`.
    pub fn access_levels<I, T>(mut self, levels: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.access_levels = levels.into_iter().map(Into::into).collect();
        self
    }

    /// Why `identity` is refused, if it is.
    pub(crate) fn refusal(&self, identity: &IapIdentity) -> Option<String> {
        if !self.hosted_domains.is_empty() {
            match identity.hosted_domain() {
                Some(hd) if self.hosted_domains.contains(&hd.to_ascii_lowercase()) => {}
                Some(hd) => return Some(format!("hosted domain {hd:?} is not allowed")),
                None => return Some("no hosted domain (hd) but the policy requires one".into()),
            }
        }
        if !self.email_domains.is_empty() {
            let domain = identity
                .email()
                .and_then(|email| email.rsplit_once('@'))
                .map(|(_, domain)| domain.to_ascii_lowercase());
            match domain {
                Some(domain) if self.email_domains.contains(&domain) => {}
                Some(domain) => return Some(format!("email domain {domain:?} is not allowed")),
                None => return Some("no email but the policy requires an email domain".into()),
            }
        }
        let levels = identity.access_levels();
        if let Some(missing) = self
            .access_levels
            .iter()
            .find(|level| !levels.contains(level))
        {
            return Some(format!("access level {missing:?} is not met"));
        }
        None
    }
}

fn lowercase<I, T>(values: I) -> Vec<String>
where
    I: IntoIterator<Item = T>,
    T: Into<String>,
{
    values
        .into_iter()
        .map(|v| v.into().to_ascii_lowercase())
        .collect()
}
