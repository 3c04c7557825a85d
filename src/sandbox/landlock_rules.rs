//! The Landlock layer of the sandbox: the network rules (ABI 4: TCP bind
//! and connect; ABI 10: UDP too) and the abstract Unix socket scope (ABI 6),
//! through the `landlock` crate, best effort: a kernel with an older ABI
//! enforces what it knows and the rest is reported as missing.

use landlock::{
    Access, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};

use super::{Missing, Policy};

/// The newest ABI whose rights olm asks for (the crate tests each).
const NEWEST: ABI = ABI::V10;
/// The first ABI with network rules (Linux 6.7).
const NETWORK_ABI: i32 = 4;
/// The first ABI that scopes abstract Unix sockets (Linux 6.12).
const SCOPE_ABI: i32 = 6;
/// The first ABI with UDP rules (Linux 7.2); before it seccomp alone keeps UDP out.
const UDP_ABI: i32 = 10;

/// What this kernel's Landlock offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockSupport {
    /// The kernel's Landlock ABI; 0 when Landlock is absent.
    pub abi: i32,
    /// Why Landlock is absent, when it is.
    pub unavailable: Option<&'static str>,
}

impl LandlockSupport {
    /// Whether TCP bind and connect can be restricted.
    pub fn network_rules(&self) -> bool {
        self.abi >= NETWORK_ABI
    }

    /// Whether UDP is restricted by Landlock too (else by seccomp alone).
    pub fn udp_rules(&self) -> bool {
        self.abi >= UDP_ABI
    }

    /// Features of Landlock the sandbox would use that this kernel lacks.
    /// UDP rules are not listed: the seccomp filter keeps UDP out anyway.
    pub fn missing(&self) -> Vec<Missing> {
        let mut missing = Vec::new();
        if let Some(why) = self.unavailable {
            missing.push(Missing {
                feature: "Landlock",
                reason: why.into(),
            });
            return missing;
        }
        if !self.network_rules() {
            missing.push(Missing {
                feature: "Landlock network rules",
                reason: format!(
                    "kernel Landlock ABI {} (network rules need ABI {NETWORK_ABI}, Linux 6.7)",
                    self.abi
                ),
            });
        }
        if self.abi < SCOPE_ABI {
            missing.push(Missing {
                feature: "Landlock abstract Unix socket scope",
                reason: format!(
                    "kernel Landlock ABI {} (the scope needs ABI {SCOPE_ABI}, Linux 6.12)",
                    self.abi
                ),
            });
        }
        missing
    }
}

/// Ask the kernel for its Landlock ABI (restricts nothing).
pub fn support() -> LandlockSupport {
    // SAFETY: landlock_create_ruleset with a null attribute, size 0 and the
    // VERSION flag only returns the ABI version (or -1 with errno); it reads
    // and writes no memory.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if version >= 1 {
        return LandlockSupport {
            abi: i32::try_from(version).unwrap_or(i32::MAX),
            unavailable: None,
        };
    }
    let why = match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EOPNOTSUPP) => {
            "Landlock is built into the kernel but not enabled at boot (lsm=)"
        }
        _ => "the kernel has no Landlock (Linux 5.13 or newer, CONFIG_SECURITY_LANDLOCK)",
    };
    LandlockSupport {
        abi: 0,
        unavailable: Some(why),
    }
}

/// What [`restrict`] put in force.
pub struct Outcome {
    /// Whether TCP connect and bind are restricted.
    pub network: bool,
    pub missing: Vec<Missing>,
}

/// Restrict this thread (and what it starts) to `policy`'s network rights.
pub fn restrict(policy: &Policy) -> Result<Outcome, String> {
    let kernel = support();
    let mut handled = AccessNet::from_all(NEWEST);
    if policy.name_lookup {
        // A host name lookup sends a UDP datagram to the resolver; seccomp
        // still refuses raw sockets, and TCP stays restricted here.
        handled = AccessNet::from_all(ABI::V4);
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(handled)
        .map_err(|error| error.to_string())?;
    if kernel.abi >= SCOPE_ABI {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket)
            .map_err(|error| error.to_string())?;
    }
    let mut created = ruleset.create().map_err(|error| error.to_string())?;
    if let Some(port) = policy.bind_port {
        created = created
            .add_rule(NetPort::new(port, AccessNet::BindTcp))
            .map_err(|error| error.to_string())?;
    }
    for port in policy.connect_port.iter().chain(&policy.rpc_ports) {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(|error| error.to_string())?;
    }
    let status = created.restrict_self().map_err(|error| error.to_string())?;
    let network = kernel.network_rules() && status.ruleset != RulesetStatus::NotEnforced;
    Ok(Outcome {
        network,
        missing: kernel.missing(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_kernel_is_reported_feature_by_feature() {
        let old = LandlockSupport {
            abi: 3,
            unavailable: None,
        };
        let features: Vec<&str> = old.missing().iter().map(|m| m.feature).collect();
        assert_eq!(
            features,
            [
                "Landlock network rules",
                "Landlock abstract Unix socket scope"
            ]
        );
        let none = LandlockSupport {
            abi: 0,
            unavailable: Some("absent"),
        };
        assert_eq!(none.missing().len(), 1);
        let current = LandlockSupport {
            abi: 7,
            unavailable: None,
        };
        assert!(current.missing().is_empty());
        assert!(current.network_rules() && !current.udp_rules());
    }
}
