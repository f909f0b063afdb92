//! The region MSK IAM tokens are signed for: the cluster's, which MSK checks against its own.
//!
//! ```text
//!  kafka.aws_region                 set: that region (an override)
//!  kafka.aws_region_host            else the region its host name carries
//!  kafka.bootstrap_servers          else the region their host names carry (all must agree)
//!  AWS_REGION, AWS_DEFAULT_REGION   only when no host names one
//! ```
//!
//! EKS (IRSA, Pod Identity) and ECS set `AWS_REGION` to the pod's or task's own region: right
//! for STS and every other AWS call, which stay regional there, but not the region of an MSK
//! cluster in another region, which the target-region sink-writer reads. Host names carrying a
//! region: provisioned brokers (`b-1.<cluster>.<id>.c2.kafka.<region>.amazonaws.com`, also over
//! multi-VPC private connectivity), serverless (`boot-<id>.c1.kafka-serverless.<region>…`), VPC
//! endpoints (`vpce-<id>.vpce-svc-<id>.<region>.vpce.amazonaws.com`), in every partition
//! (`amazonaws.com`, `amazonaws.com.cn`, dual-stack `api.aws`). The region is the label at its
//! fixed place before the suffix, so a cluster named `kafka` or `us-west-1-app` changes nothing.
//!
//! Pure: the environment comes in as a function.

use std::fmt;

/// Where the signing region came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionSource {
    /// `kafka.aws_region`.
    Configured,
    /// A host name of the cluster, from `setting` (`kafka.aws_region_host` or `kafka.bootstrap_servers`).
    Host { host: String, setting: &'static str },
    /// An environment variable, as no host names a region.
    Environment(&'static str),
}

/// The region tokens are signed for, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningRegion {
    pub region: String,
    pub source: RegionSource,
}

impl fmt::Display for SigningRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            RegionSource::Configured => write!(f, "{}, set by kafka.aws_region", self.region),
            RegionSource::Host { host, setting } => write!(f, "{}, named by the host {host} ({setting})", self.region),
            RegionSource::Environment(var) => {
                write!(f, "{}, from {var}: no bootstrap host names a region", self.region)
            }
        }
    }
}

/// Why no signing region can be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    #[error("kafka.aws_region_host '{0}' names no region: give a broker host name as MSK lists it, e.g. b-1.<cluster>.<id>.c2.kafka.<region>.amazonaws.com")]
    HostWithoutRegion(String),
    #[error("the bootstrap hosts name two regions, {0} and {1}: list the brokers of one cluster")]
    Conflict(String, String),
    #[error("no region: no bootstrap host names one (as MSK's do); set kafka.aws_region to the cluster's region")]
    Missing,
}

/// The region named by the cluster's host names: `aws_region_host` when set, else the
/// bootstrap servers'. `Ok(None)` when none names one.
pub fn region_of_hosts(aws_region_host: &str, bootstrap_servers: &str) -> Result<Option<SigningRegion>, RegionError> {
    let host_setting = aws_region_host.trim();
    if !host_setting.is_empty() {
        let host = host_of(host_setting);
        return match region_of_host(host) {
            Some(region) => Ok(Some(SigningRegion {
                region,
                source: RegionSource::Host { host: host.to_string(), setting: "kafka.aws_region_host" },
            })),
            None => Err(RegionError::HostWithoutRegion(host_setting.to_string())),
        };
    }
    let mut found: Option<SigningRegion> = None;
    for host in bootstrap_servers.split(',').map(host_of).filter(|h| !h.is_empty()) {
        let Some(region) = region_of_host(host) else { continue };
        match &found {
            Some(first) if first.region != region => return Err(RegionError::Conflict(first.region.clone(), region)),
            Some(_) => {}
            None => {
                let source = RegionSource::Host { host: host.to_string(), setting: "kafka.bootstrap_servers" };
                found = Some(SigningRegion { region, source });
            }
        }
    }
    Ok(found)
}

/// The signing region by the rule above; `env` reads an environment variable.
pub fn signing_region(
    aws_region: &str,
    aws_region_host: &str,
    bootstrap_servers: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<SigningRegion, RegionError> {
    let configured = aws_region.trim();
    if !configured.is_empty() {
        return Ok(SigningRegion { region: configured.to_string(), source: RegionSource::Configured });
    }
    if let Some(named) = region_of_hosts(aws_region_host, bootstrap_servers)? {
        return Ok(named);
    }
    environment_region(env)
        .map(|(var, region)| SigningRegion { region, source: RegionSource::Environment(var) })
        .ok_or(RegionError::Missing)
}

/// The process's own region: `AWS_REGION`, else `AWS_DEFAULT_REGION`, with the variable's name.
pub fn environment_region(env: impl Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .into_iter()
        .find_map(|var| env(var).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).map(|v| (var, v)))
}

/// The process environment, for [`signing_region`] and [`environment_region`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The host of one bootstrap entry: `[protocol://]host[:port]`.
fn host_of(entry: &str) -> &str {
    let entry = entry.trim();
    let entry = entry.split_once("://").map_or(entry, |(_, rest)| rest);
    if entry.starts_with('[') {
        return ""; // an IPv6 address names no region
    }
    entry.split(':').next().unwrap_or("")
}

/// The region an MSK host name carries, at its fixed place before the AWS suffix.
pub fn region_of_host(host: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    let suffix = [&["amazonaws", "com"][..], &["amazonaws", "com", "cn"], &["api", "aws"]]
        .into_iter()
        .find(|suffix| labels.ends_with(suffix))?;
    let name = &labels[..labels.len() - suffix.len()];
    let region = match name {
        // VPC endpoint: vpce-<id>[-<zone>].<service or vpce-svc-id>.<region>.vpce
        [first, .., region, "vpce"] if first.starts_with("vpce-") => region,
        [.., service, region] if matches!(*service, "kafka" | "kafka-serverless" | "kafka-fips") && name.len() > 2 => {
            region
        }
        _ => return None,
    };
    is_region(region).then(|| region.to_string())
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `ap-southeast-7`: letters, words, a number.
fn is_region(label: &str) -> bool {
    let parts: Vec<&str> = label.split('-').collect();
    let letters = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    label.len() <= 32
        && parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|p| letters(p))
        && parts[parts.len() - 1].len() <= 2
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_read_from_every_kind_of_msk_host_name() {
        for (host, region) in [
            ("b-1.source.abc123.c2.kafka.us-west-2.amazonaws.com", "us-west-2"),
            ("b-3.orders-prod.x7y8z9.c14.kafka.eu-central-1.amazonaws.com:9098", "eu-central-1"),
            // Multi-VPC private connectivity: the same names, ports 14001-14100.
            ("b-2.source.abc123.c2.kafka.ap-southeast-2.amazonaws.com:14002", "ap-southeast-2"),
            ("boot-abcd1234.c1.kafka-serverless.eu-west-1.amazonaws.com:9098", "eu-west-1"),
            ("vpce-0a1b2c3d4e5f-abcdefgh.vpce-svc-0123456789abcdef0.us-east-2.vpce.amazonaws.com:9098", "us-east-2"),
            ("vpce-0a1b2c3d-xyz-us-east-1a.kafka.us-east-1.vpce.amazonaws.com", "us-east-1"),
            // A cluster named "kafka", or named like another region.
            ("b-1.kafka.abc123.c2.kafka.us-west-2.amazonaws.com:9098", "us-west-2"),
            ("b-1.kafka-us-east-1.abc123.c2.kafka.us-west-2.amazonaws.com", "us-west-2"),
            ("b-1.us-west-1-qa.abcdef.c2.kafka.cn-north-1.amazonaws.com.cn", "cn-north-1"),
            ("b-1.eu-west-1-qa.abcdef.c3.kafka.us-gov-west-1.amazonaws.com", "us-gov-west-1"),
            ("b-1.demo.abc123.c2.kafka.us-west-2.api.aws", "us-west-2"),
            ("B-1.SOURCE.ABC123.C2.KAFKA.US-WEST-2.AMAZONAWS.COM.", "us-west-2"),
            ("SASL_SSL://b-1.source.abc123.c2.kafka.sa-east-1.amazonaws.com:9098", "sa-east-1"),
        ] {
            assert_eq!(region_of_host(host_of(host)).as_deref(), Some(region), "{host}");
        }
        for host in [
            "127.0.0.1",
            "kafka.internal",
            "kafka.us-east-1.example.com",
            "myapp.us-east-1.internal.corp",
            "kafka.us-east-1.amazonaws.com", // the signing host itself, no broker
            "b-1.source.abc123.c2.kafka.notaregion.amazonaws.com",
            "ec2-1-2-3-4.us-east-1.compute.amazonaws.com",
            "amazonaws.com",
        ] {
            assert_eq!(region_of_host(host_of(host)), None, "{host}");
        }
        assert_eq!(host_of("[::1]:9092"), "");
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    const MSK: &str = "b-1.source.abc123.c2.kafka.us-west-2.amazonaws.com:9098,b-2.source.abc123.c2.kafka.us-west-2.amazonaws.com:9098";

    #[test]
    fn the_clusters_host_wins_over_the_pods_region_and_kafka_aws_region_over_both() {
        let pod = [("AWS_REGION", "us-east-1"), ("AWS_DEFAULT_REGION", "eu-west-1")];
        let chosen = signing_region("", "", MSK, env(&pod)).expect("a region");
        assert_eq!(chosen.region, "us-west-2", "the cluster's region, not the pod's");
        assert_eq!(
            chosen.to_string(),
            "us-west-2, named by the host b-1.source.abc123.c2.kafka.us-west-2.amazonaws.com (kafka.bootstrap_servers)"
        );
        let overridden = signing_region("eu-north-1", "", MSK, env(&pod)).expect("a region");
        assert_eq!((overridden.region.as_str(), &overridden.source), ("eu-north-1", &RegionSource::Configured));

        // A host for the region when the bootstrap servers are an alias.
        let aliased =
            signing_region("", "b-1.source.abc.c2.kafka.ca-central-1.amazonaws.com", "kafka.corp:9098", env(&pod));
        let aliased = aliased.expect("a region");
        assert_eq!(aliased.region, "ca-central-1");
        assert!(aliased.to_string().contains("(kafka.aws_region_host)"), "{aliased}");
        assert_eq!(
            signing_region("", "kafka.corp", MSK, env(&pod)),
            Err(RegionError::HostWithoutRegion("kafka.corp".into()))
        );

        // No host names one: the environment, AWS_REGION first.
        let local = signing_region("", "", "127.0.0.1:9092", env(&pod)).expect("a region");
        assert_eq!(local.region, "us-east-1");
        assert_eq!(local.to_string(), "us-east-1, from AWS_REGION: no bootstrap host names a region");
        let default = signing_region("", "", "127.0.0.1:9092", env(&pod[1..])).expect("a region");
        assert_eq!(default.source, RegionSource::Environment("AWS_DEFAULT_REGION"));
        assert_eq!(signing_region("", "", "127.0.0.1:9092", env(&[("AWS_REGION", " ")])), Err(RegionError::Missing));
    }

    #[test]
    fn bootstrap_hosts_of_two_regions_are_refused() {
        let mixed = "b-1.a.x.c2.kafka.us-west-2.amazonaws.com:9098,b-1.b.y.c2.kafka.us-east-1.amazonaws.com:9098";
        assert_eq!(
            signing_region("", "", mixed, env(&[])),
            Err(RegionError::Conflict("us-west-2".into(), "us-east-1".into()))
        );
        // Hosts without a region beside one with a region: that region.
        let with_ip = "10.0.0.5:9098,b-1.a.x.c2.kafka.us-west-2.amazonaws.com:9098";
        assert_eq!(signing_region("", "", with_ip, env(&[])).map(|r| r.region), Ok("us-west-2".into()));
    }
}
