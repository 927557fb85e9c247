//! The wire contract of providers that run outside the host (remote and sidecar providers):
//! `proto/greentic.proto`, derived from the WIT contracts by [`generate`] so that the two cannot
//! drift (a test compares the committed file with what the WIT gives).
//!
//! - Every record, variant and enum of a `greentic:` package is a message (an enum), named
//!   `{Package}{Type}` (`TypesTenantCtx`, `MessagingMessage`): fields in WIT order from 1, a
//!   variant as a `oneof` (a case without payload carries [`UNIT`]), `option<T>` as presence
//!   (`optional` for scalars), `list<u8>` as `bytes`, `list<T>` as `repeated`.
//! - `service Provider`: every function a domain world exports from a `greentic:` interface, as
//!   `rpc {Package}{Function}`: the request holds its parameters, the response its result —
//!   `result<T, E>` as `oneof result { T ok; E err }`. Plus `Describe`, which returns the
//!   provider's manifest (JSON) so the host can check it before any call.
//! - A domain world that exports `wasi:http/incoming-handler` (the webhook domain) gets
//!   `rpc {Package}Handle`: the delivery as [`HTTP_EXCHANGE`]'s messages — the call's
//!   `tenant-ctx`, method, path and query, headers (repeated names kept) and the whole body; the
//!   answer's status, headers and body. (WASI's streams and resources have no wire form; a
//!   delivery the host has read in full, within its limits, is what crosses.)
//! - `service Host`: every function the host offers providers (`greentic:provider/imports`:
//!   secrets, config, state, events, logs, metrics), as the callbacks a provider makes during a
//!   call. The tenant is ambient as in WIT: the call's credential (`x-greentic-call` metadata)
//!   says whose call it is. A resource (a telemetry span) is a `uint64` handle the host gives
//!   out, valid within the call: its constructor is `{Package}{Resource}New`, its methods
//!   `{Package}{Resource}{Method}` with the handle as `handle`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use wit_parser::{
    Docs, Function, FunctionKind, InterfaceId, Resolve, Type, TypeDefKind, TypeId, WorldItem,
};

use crate::Contracts;

/// The protobuf package of the wire contract.
pub const PACKAGE: &str = "greentic.v1";
/// The message a variant case without payload, or a function without result, carries.
pub const UNIT: &str = "Unit";
/// The messages of an HTTP exchange, for the domain worlds that export
/// `wasi:http/incoming-handler` (`{Package}HandleRequest` / `Response` are named from them).
pub const HTTP_EXCHANGE: &str = "wasi:http/incoming-handler";

/// Where the generated contract is committed, relative to the repository.
pub const PATH: &str = "proto/greentic.proto";

/// The wire contract of `contracts` (see the module's documentation).
pub fn generate(contracts: &Contracts) -> Result<String, String> {
    Generator::new(contracts.resolve()).run()
}

struct Generator<'a> {
    resolve: &'a Resolve,
    out: String,
    /// Messages made for shapes protobuf has no field for (an option in a oneof, a list of
    /// lists), by name.
    wrappers: BTreeMap<String, String>,
}

/// How a field holds its type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Single,
    Optional,
    Repeated,
}

impl Label {
    fn prefix(self) -> &'static str {
        match self {
            Label::Single => "",
            Label::Optional => "optional ",
            Label::Repeated => "repeated ",
        }
    }
}

fn pascal(kebab: &str) -> String {
    kebab
        .split(['-', '_', '.'])
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn snake(kebab: &str) -> String {
    kebab.replace('-', "_")
}

fn screaming(kebab: &str) -> String {
    kebab.replace('-', "_").to_ascii_uppercase()
}

fn is_scalar(t: &str) -> bool {
    matches!(
        t,
        "bool" | "int32" | "int64" | "uint32" | "uint64" | "float" | "double" | "string" | "bytes"
    )
}

impl<'a> Generator<'a> {
    fn new(resolve: &'a Resolve) -> Generator<'a> {
        Generator {
            resolve,
            out: String::new(),
            wrappers: BTreeMap::new(),
        }
    }

    fn docs(out: &mut String, docs: &Docs, indent: &str) {
        if let Some(text) = &docs.contents {
            for line in text.lines() {
                let _ = writeln!(
                    out,
                    "{indent}//{}{line}",
                    if line.is_empty() { "" } else { " " }
                );
            }
        }
    }

    /// The `greentic:` packages' interfaces, by package name, in file order.
    fn interfaces(&self) -> Vec<(String, InterfaceId)> {
        let mut packages: Vec<_> = self
            .resolve
            .packages
            .iter()
            .filter(|(_, p)| p.name.namespace == "greentic")
            .collect();
        packages.sort_by(|a, b| a.1.name.name.cmp(&b.1.name.name));
        packages
            .into_iter()
            .flat_map(|(_, p)| {
                p.interfaces
                    .values()
                    .map(|id| (p.name.name.clone(), *id))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The type a `use` resolves to.
    fn origin(&self, mut id: TypeId) -> TypeId {
        while let TypeDefKind::Type(Type::Id(next)) = self.resolve.types[id].kind {
            id = next;
        }
        id
    }

    /// `{Package}{Type}` of a named type.
    fn message_name(&self, id: TypeId) -> Result<String, String> {
        let def = &self.resolve.types[self.origin(id)];
        let name = def
            .name
            .as_deref()
            .ok_or("an anonymous type has no message name")?;
        let package = match def.owner {
            wit_parser::TypeOwner::Interface(i) => self.resolve.interfaces[i]
                .package
                .map(|p| self.resolve.packages[p].name.name.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        Ok(format!("{}{}", pascal(&package), pascal(name)))
    }

    /// How a field of type `ty` is written: its label and type.
    fn field(&mut self, ty: &Type) -> Result<(Label, String), String> {
        let scalar = |s: &str| Ok((Label::Single, s.to_string()));
        match ty {
            Type::Bool => scalar("bool"),
            Type::U8 | Type::U16 | Type::U32 => scalar("uint32"),
            Type::U64 => scalar("uint64"),
            Type::S8 | Type::S16 | Type::S32 => scalar("int32"),
            Type::S64 => scalar("int64"),
            Type::F32 => scalar("float"),
            Type::F64 => scalar("double"),
            Type::Char | Type::String => scalar("string"),
            Type::ErrorContext => Err("error-context has no wire form".into()),
            Type::Id(id) => {
                let id = self.origin(*id);
                let def = &self.resolve.types[id];
                match &def.kind {
                    TypeDefKind::Record(_) | TypeDefKind::Variant(_) | TypeDefKind::Enum(_) => {
                        Ok((Label::Single, self.message_name(id)?))
                    }
                    TypeDefKind::List(Type::U8) => scalar("bytes"),
                    // A resource handle (`own<span>`, `borrow<span>`): the host's handle for it,
                    // valid within the call that made it.
                    TypeDefKind::Handle(_) => scalar("uint64"),
                    TypeDefKind::List(inner) => {
                        let (label, t) = self.field(inner)?;
                        let t = if label == Label::Single {
                            t
                        } else {
                            self.wrapper(&t, label)
                        };
                        Ok((Label::Repeated, t))
                    }
                    TypeDefKind::Option(inner) => {
                        let (label, t) = self.field(inner)?;
                        Ok(match label {
                            // A message has presence of its own.
                            Label::Single if !is_scalar(&t) && !self.is_enum(inner) => {
                                (Label::Single, t)
                            }
                            Label::Single => (Label::Optional, t),
                            other => (Label::Single, self.wrapper(&t, other)),
                        })
                    }
                    other => Err(format!(
                        "{} has no wire form in this contract",
                        match other {
                            TypeDefKind::Result(_) => "a result outside a function's return",
                            TypeDefKind::Tuple(_) => "a tuple",
                            TypeDefKind::Flags(_) => "flags",
                            TypeDefKind::Resource | TypeDefKind::Handle(_) => "a resource",
                            _ => "this type",
                        }
                    )),
                }
            }
        }
    }

    fn is_enum(&self, ty: &Type) -> bool {
        matches!(ty, Type::Id(id) if matches!(self.resolve.types[self.origin(*id)].kind, TypeDefKind::Enum(_)))
    }

    /// A message holding one `label` field of `t`, for places that take a single message.
    fn wrapper(&mut self, t: &str, label: Label) -> String {
        let name = format!(
            "{}{}",
            pascal(t),
            match label {
                Label::Repeated => "List",
                _ => "Value",
            }
        );
        self.wrappers.entry(name.clone()).or_insert_with(|| {
            format!(
                "message {name} {{\n  {}{t} value = 1;\n}}\n",
                label.prefix()
            )
        });
        name
    }

    /// A field that can stand in a `oneof` (no label): an `option<T>` is wrapped, so that
    /// `none` is a value there too (`StateGetResponse.ok` with no entry is not "no answer").
    fn oneof_field(&mut self, ty: &Type) -> Result<String, String> {
        let is_option = matches!(ty, Type::Id(id)
            if matches!(self.resolve.types[self.origin(*id)].kind, TypeDefKind::Option(_)));
        let (label, t) = self.field(ty)?;
        Ok(match label {
            Label::Single if is_option => self.wrapper(&t, Label::Single),
            Label::Single => t,
            other => self.wrapper(&t, other),
        })
    }

    fn types(&mut self) -> Result<(), String> {
        for (_, interface) in self.interfaces() {
            let types: Vec<(String, TypeId)> = self.resolve.interfaces[interface]
                .types
                .iter()
                .map(|(n, id)| (n.clone(), *id))
                .collect();
            for (_, id) in types {
                if self.origin(id) != id {
                    continue; // a `use` of a type defined elsewhere
                }
                let def = &self.resolve.types[id];
                let name = self.message_name(id)?;
                let mut text = String::new();
                Self::docs(&mut text, &def.docs, "");
                match &def.kind {
                    TypeDefKind::Record(record) => {
                        let _ = writeln!(text, "message {name} {{");
                        for (i, field) in record.fields.iter().enumerate() {
                            let (label, t) = self.field(&field.ty)?;
                            Self::docs(&mut text, &field.docs, "  ");
                            let _ = writeln!(
                                text,
                                "  {}{t} {} = {};",
                                label.prefix(),
                                snake(&field.name),
                                i + 1
                            );
                        }
                        text.push_str("}\n");
                    }
                    TypeDefKind::Variant(variant) => {
                        let _ = writeln!(text, "message {name} {{\n  oneof value {{");
                        for (i, case) in variant.cases.iter().enumerate() {
                            let t = match &case.ty {
                                Some(ty) => self.oneof_field(ty)?,
                                None => UNIT.to_string(),
                            };
                            Self::docs(&mut text, &case.docs, "    ");
                            let _ = writeln!(text, "    {t} {} = {};", snake(&case.name), i + 1);
                        }
                        text.push_str("  }\n}\n");
                    }
                    TypeDefKind::Enum(e) => {
                        let prefix = screaming(&name_kebab(&name));
                        let _ = writeln!(text, "enum {name} {{");
                        for (i, case) in e.cases.iter().enumerate() {
                            Self::docs(&mut text, &case.docs, "  ");
                            let _ = writeln!(text, "  {prefix}_{} = {i};", screaming(&case.name));
                        }
                        text.push_str("}\n");
                    }
                    // Resources are not values; aliases were skipped above.
                    _ => continue,
                }
                self.out.push('\n');
                self.out.push_str(&text);
            }
        }
        Ok(())
    }

    /// The rpc of function `f` of `package`, and its request and response messages.
    fn rpc(
        &mut self,
        package: &str,
        f: &Function,
        rpcs: &mut String,
        messages: &mut String,
    ) -> Result<(), String> {
        // A resource's constructor is `{Resource}New`, its methods `{Resource}{Method}` (their
        // `self` is the `handle` field).
        let name = match &f.kind {
            FunctionKind::Constructor(r) => format!("{}-new", self.resource_name(*r)),
            FunctionKind::Method(r) => format!(
                "{}-{}",
                self.resource_name(*r),
                f.name.rsplit('.').next().unwrap_or(&f.name)
            ),
            _ => f.name.clone(),
        };
        let rpc = format!("{}{}", pascal(package), pascal(&name));
        let mut request = String::new();
        Self::docs(&mut request, &f.docs, "");
        let _ = writeln!(request, "message {rpc}Request {{");
        for (i, p) in f.params.iter().enumerate() {
            let (label, t) = self.field(&p.ty)?;
            let field = if p.name == "self" {
                "handle".to_string()
            } else {
                snake(&p.name)
            };
            let _ = writeln!(request, "  {}{t} {field} = {};", label.prefix(), i + 1);
        }
        request.push_str("}\n");
        let mut response = format!("message {rpc}Response {{\n");
        match &f.result {
            None => {}
            Some(Type::Id(id))
                if matches!(
                    self.resolve.types[self.origin(*id)].kind,
                    TypeDefKind::Result(_)
                ) =>
            {
                let TypeDefKind::Result(r) = &self.resolve.types[self.origin(*id)].kind else {
                    unreachable!()
                };
                let ok = match &r.ok {
                    Some(t) => self.oneof_field(t)?,
                    None => UNIT.to_string(),
                };
                let err = match &r.err {
                    Some(t) => self.oneof_field(t)?,
                    None => UNIT.to_string(),
                };
                let _ = writeln!(
                    response,
                    "  oneof result {{\n    {ok} ok = 1;\n    {err} err = 2;\n  }}"
                );
            }
            Some(t) => {
                let (label, t) = self.field(t)?;
                let _ = writeln!(response, "  {}{t} value = 1;", label.prefix());
            }
        }
        response.push_str("}\n");
        let _ = write!(messages, "\n{request}\n{response}");
        Self::docs(rpcs, &f.docs, "  ");
        let _ = writeln!(rpcs, "  rpc {rpc}({rpc}Request) returns ({rpc}Response);");
        Ok(())
    }

    fn resource_name(&self, id: TypeId) -> String {
        self.resolve.types[id].name.clone().unwrap_or_default()
    }

    /// The functions of the interfaces `world` imports (or exports), from `greentic:`
    /// packages, by package: freestanding ones, and (for imports) resource constructors and
    /// methods.
    fn world_functions(&self, world: &str, exports: bool) -> Vec<(String, Function)> {
        let mut out = Vec::new();
        for (_, w) in self.resolve.worlds.iter() {
            let Some(package) = w.package.map(|p| &self.resolve.packages[p]) else {
                continue;
            };
            if package.name.namespace != "greentic"
                || (world != "*" && format!("{}/{}", package.name.name, w.name) != world)
                || (world == "*" && w.name == "imports")
            {
                continue;
            }
            let items = if exports { &w.exports } else { &w.imports };
            for item in items.values() {
                let WorldItem::Interface { id, .. } = item else {
                    continue;
                };
                let interface = &self.resolve.interfaces[*id];
                let Some(owner) = interface.package.map(|p| &self.resolve.packages[p]) else {
                    continue;
                };
                if owner.name.namespace != "greentic" {
                    continue;
                }
                for f in interface.functions.values() {
                    let resource = matches!(
                        f.kind,
                        FunctionKind::Constructor(_) | FunctionKind::Method(_)
                    );
                    if f.kind == FunctionKind::Freestanding || (resource && !exports) {
                        out.push((owner.name.name.clone(), f.clone()));
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1.name).cmp(&(&b.0, &b.1.name)));
        out.dedup_by(|a, b| a.0 == b.0 && a.1.name == b.1.name);
        out
    }

    /// The `greentic:` packages whose worlds export [`HTTP_EXCHANGE`], in order.
    fn http_exports(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, w) in self.resolve.worlds.iter() {
            let Some(package) = w.package.map(|p| &self.resolve.packages[p]) else {
                continue;
            };
            if package.name.namespace != "greentic" {
                continue;
            }
            let exports_http = w.exports.values().any(|item| {
                let WorldItem::Interface { id, .. } = item else {
                    return false;
                };
                let interface = &self.resolve.interfaces[*id];
                let owner = interface.package.map(|p| &self.resolve.packages[p].name);
                owner.is_some_and(|o| format!("{}:{}", o.namespace, o.name) == "wasi:http")
                    && interface.name.as_deref() == Some("incoming-handler")
            });
            if exports_http {
                out.push(package.name.name.clone());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn run(mut self) -> Result<String, String> {
        let mut head = String::new();
        let _ = write!(
            head,
            "// The wire contract of greentic providers that run outside the host (remote and
// sidecar providers), derived from the WIT contracts in wit/ by greentic-interfaces
// (`proto::generate`). Do not edit: a test fails when it differs from what the WIT gives;
// regenerate with `GREENTIC_WRITE_PROTO=1 cargo test -p greentic-interfaces --test proto`.
//
// The host calls `Provider`; during a call the provider calls back `Host` with the call's
// credential (metadata `x-greentic-call`), which is valid for that call's tenant, provider,
// grants and deadline only. Deadlines travel as `grpc-timeout`, trace context as
// `traceparent`.
syntax = \"proto3\";

package {PACKAGE};

// No value: a variant case without payload, a function without result.
message {UNIT} {{}}

// Describe asks for nothing.
message DescribeRequest {{}}

// What a provider is: its manifest, as the JSON a component embeds.
message DescribeResponse {{
  string manifest_json = 1;
}}
"
        );
        self.out = head;
        self.types()?;
        let mut messages = String::new();
        let mut provider = String::from(
            "\n// What the host calls. Each rpc is a function a domain world exports.\nservice Provider {\n  // The provider's manifest, checked (and pinned by digest) before any call.\n  rpc Describe(DescribeRequest) returns (DescribeResponse);\n",
        );
        for (package, f) in self.world_functions("*", true) {
            self.rpc(&package, &f, &mut provider, &mut messages)?;
        }
        let http = self.http_exports();
        if !http.is_empty() {
            messages.push_str(
                "\n// A header of an HTTP exchange: its name, and its value as bytes (a header may carry\n// any octet but NUL, CR and LF).\nmessage HttpHeader {\n  string name = 1;\n  bytes value = 2;\n}\n",
            );
        }
        for package in http {
            let rpc = format!("{}Handle", pascal(&package));
            let _ = write!(
                messages,
                "\n// A delivery to a `{package}` provider (its world exports {HTTP_EXCHANGE}), read in full\n// within the host's limits: the headers are the sender's without any `x-greentic-*` one,\n// plus the host's `x-greentic-tenant` and `x-greentic-trace-id`.\nmessage {rpc}Request {{\n  TypesTenantCtx ctx = 1;\n  string method = 2;\n  string path_with_query = 3;\n  repeated HttpHeader headers = 4;\n  bytes body = 5;\n}}\n\n// The provider's answer to the sender.\nmessage {rpc}Response {{\n  uint32 status = 1;\n  repeated HttpHeader headers = 2;\n  bytes body = 3;\n}}\n"
            );
            let _ = writeln!(
                provider,
                "  // {HTTP_EXCHANGE}.handle: one delivery, answered whole.\n  rpc {rpc}({rpc}Request) returns ({rpc}Response);"
            );
        }
        provider.push_str("}\n");
        let mut host = String::from(
            "\n// What a provider calls back during a call: the host's capabilities, scoped to the call.\nservice Host {\n",
        );
        for (package, f) in self.world_functions("provider/imports", false) {
            self.rpc(&package, &f, &mut host, &mut messages)?;
        }
        host.push_str("}\n");
        self.out.push_str(&messages);
        for wrapper in self.wrappers.values() {
            self.out.push('\n');
            self.out.push_str(wrapper);
        }
        self.out.push_str(&provider);
        self.out.push_str(&host);
        Ok(self.out)
    }
}

/// `TelemetryLevel` → `telemetry-level`.
fn name_kebab(pascal: &str) -> String {
    let mut out = String::new();
    for (i, c) in pascal.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_protobuf_style() {
        assert_eq!(pascal("tenant-ctx"), "TenantCtx");
        assert_eq!(snake("idempotency-key"), "idempotency_key");
        assert_eq!(screaming(&name_kebab("TelemetryLevel")), "TELEMETRY_LEVEL");
    }
}
