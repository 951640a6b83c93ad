//! Sigma log sources and field names the sensor produces (Sysmon-for-Linux names).

use crate::{field::Field, input::SubjectKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Category {
    ProcessCreation,
    NetworkConnection,
}

impl Category {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "process_creation" => Some(Category::ProcessCreation),
            "network_connection" => Some(Category::NetworkConnection),
            _ => None,
        }
    }

    /// Which inputs the category's rules apply to.
    pub(crate) fn subject(self) -> SubjectKind {
        match self {
            Category::ProcessCreation => SubjectKind::Exec,
            Category::NetworkConnection => SubjectKind::Connect,
        }
    }

    /// The field named `name` in this category, if the sensor produces it.
    pub(crate) fn field(self, name: &str) -> Option<Field> {
        // Process fields exist on both: a connect event carries its process and ancestry.
        let process = match name {
            "Image" => Some(Field::Image),
            "CommandLine" => Some(Field::CommandLine),
            "ParentImage" => Some(Field::ParentImage),
            "ParentCommandLine" => Some(Field::ParentCommandLine),
            "User" => Some(Field::User),
            "CurrentDirectory" => Some(Field::CurrentDirectory),
            "ProcessId" => Some(Field::ProcessId),
            "ParentProcessId" => Some(Field::ParentProcessId),
            _ => None,
        };
        if process.is_some() {
            return process;
        }
        match (self, name) {
            (Category::NetworkConnection, "DestinationIp") => Some(Field::DestinationIp),
            (Category::NetworkConnection, "DestinationPort") => Some(Field::DestinationPort),
            (Category::NetworkConnection, "DestinationIsIpv6") => Some(Field::DestinationIsIpv6),
            (Category::NetworkConnection, "SourceIp") => Some(Field::SourceIp),
            (Category::NetworkConnection, "SourcePort") => Some(Field::SourcePort),
            (Category::NetworkConnection, "Protocol") => Some(Field::Protocol),
            (Category::NetworkConnection, "Initiated") => Some(Field::Initiated),
            _ => None,
        }
    }
}
