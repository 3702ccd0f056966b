//! The one table of which role each method needs. A method of our service missing here is
//! refused to everyone but admins, and a test walks the service descriptor so that a method
//! added without an entry fails the suite.

use super::principal::Role;

/// The gRPC service the table is about.
pub const SERVICE: &str = "provision.v1.ProvisionPolicyService";

/// Every method of [`SERVICE`] and the least role that may call it.
pub const METHOD_ROLES: &[(&str, Role)] = &[
    ("GetProvisionPolicy", Role::Reader),
    ("ValidateProvisionPolicy", Role::Reader),
    ("ListProvisionPolicies", Role::Reader),
    ("ListProvisionPolicyRevisions", Role::Reader),
    ("WatchProvisionPolicies", Role::Reader),
    ("ListProxyBindings", Role::Reader),
    ("ResolveProvisionPlan", Role::Reader),
    ("ListDependents", Role::Reader),
    ("SetProvisionPolicy", Role::Writer),
    ("DeleteProvisionPolicy", Role::Writer),
    ("RollbackProvisionPolicy", Role::Writer),
    ("CreateProxyBinding", Role::Writer),
    ("DeleteProxyBinding", Role::Writer),
];

/// What a request path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health checks (probes carry no credentials) and, unless configured otherwise,
    /// reflection (the schema is public).
    Open,
    /// A principal with at least this role.
    Role(Role),
}

/// The access `path` (`/package.Service/Method`) needs. Anything not in the table, including
/// other services' methods, needs admin: a new method is closed until someone decides.
pub fn access(path: &str, reflection_requires_auth: bool) -> Access {
    if path.starts_with("/grpc.health.v1.Health/") {
        return Access::Open;
    }
    if path.starts_with("/grpc.reflection.") {
        return if reflection_requires_auth {
            Access::Role(Role::Reader)
        } else {
            Access::Open
        };
    }
    let method = path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(SERVICE))
        .and_then(|rest| rest.strip_prefix('/'));
    let role = method
        .and_then(|method| METHOD_ROLES.iter().find(|(name, _)| *name == method))
        .map_or(Role::Admin, |(_, role)| *role);
    Access::Role(role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method the service descriptor declares has a row, and every row a method.
    #[test]
    fn every_method_of_the_descriptor_has_a_role() {
        let files = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET).unwrap();
        let (package, name) = SERVICE.rsplit_once('.').unwrap();
        let service = files
            .file
            .iter()
            .filter(|file| file.package() == package)
            .flat_map(|file| &file.service)
            .find(|service| service.name() == name)
            .expect("the service is in the descriptor set");
        let declared: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        for method in &declared {
            assert!(
                METHOD_ROLES.iter().any(|(row, _)| row == method),
                "{method} has no row in METHOD_ROLES: decide which role may call it"
            );
        }
        for (row, _) in METHOD_ROLES {
            assert!(declared.contains(row), "{row} is not a method of {SERVICE}");
        }
    }

    #[test]
    fn paths_map_to_their_access() {
        let path = |m: &str| format!("/{SERVICE}/{m}");
        assert_eq!(
            access(&path("GetProvisionPolicy"), false),
            Access::Role(Role::Reader)
        );
        assert_eq!(
            access(&path("SetProvisionPolicy"), false),
            Access::Role(Role::Writer)
        );
        assert_eq!(
            access(&path("FutureAdminThing"), false),
            Access::Role(Role::Admin)
        );
        assert_eq!(access("/grpc.health.v1.Health/Check", true), Access::Open);
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        assert_eq!(access(reflection, false), Access::Open);
        assert_eq!(access(reflection, true), Access::Role(Role::Reader));
        assert_eq!(
            access("/other.Service/Get", false),
            Access::Role(Role::Admin)
        );
        assert_eq!(
            access(
                "/provision.v1.ProvisionPolicyServiceX/GetProvisionPolicy",
                false
            ),
            Access::Role(Role::Admin)
        );
    }
}
