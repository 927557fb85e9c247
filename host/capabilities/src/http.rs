//! `wasi:http/types` and `wasi:http/outgoing-handler`, with the host memory each call makes the
//! host hold counted against its budget.
//!
//! Wasmtime's implementation does the work; [`MeteredHttp`] stands in front of every function
//! of both interfaces. Each host resource a guest owns carries a charge against the call's
//! [`HostBudget`]: header fields their names and values, a request or response its headers,
//! method, path and authority plus the most its body can buffer in the host, the others a
//! fixed size. Charges are set when a resource is created or changed and given back when the
//! guest drops it or hands it on; a request handed to `outgoing-handler.handle` turns into an
//! in-flight charge (its own bytes and its connection's buffers) that lives as long as the
//! connection. A charge past the budget ends the call with `resource-limit`; a request past the
//! call's in-flight cap gets `connection-limit-reached`, which the guest can handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use greentic_manifest::{HostPattern, ProviderManifest};
use wasmtime::component::Linker;
use wasmtime::component::{HasData, Resource};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable};
use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types};
use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest,
    HostOutgoingResponse, HostResponseOutparam,
};
use wasmtime_wasi_http::p2::{HeaderError, HeaderResult, HttpError, HttpResult};
use wasmtime_wasi_http::{FieldMap, RequestOptions, WasiHttpCtxView};

use crate::budget::{HostBudget, ResourceLimitHit};
use crate::call::{HasImports, Imports};
use crate::capability::Capability;
use crate::grants::Grants;
use crate::outbound::{CONNECTION_BYTES, InFlight, NextInFlight, OUTGOING_BODY_BUFFER_BYTES};

/// Outbound HTTP (`wasi:http/outgoing-handler`), to the hosts a provider is granted.
/// `wasi:http/types` itself is linked for every provider ([`add_types_to_linker`]).
pub struct OutboundHttp;

impl Capability for OutboundHttp {
    const NAME: &'static str = "outbound_hosts";
    const INTERFACES: &'static [&'static str] = &[OUTGOING_HANDLER];

    fn granted(grants: &Grants) -> bool {
        !grants.outbound_hosts.is_empty()
    }

    fn ungranted(provider: &str, _: &ProviderManifest) -> String {
        format!(
            "imports `{OUTGOING_HANDLER}` (outbound HTTP) but the bundle grants it no outbound hosts; add `grants.outbound_hosts = [\"api.example.com\"]` to [providers.{provider}]"
        )
    }

    fn check_grants(grants: &Grants) -> Vec<String> {
        grants
            .outbound_hosts
            .iter()
            .filter_map(|host| {
                let why = host.parse::<HostPattern>().err()?;
                Some(format!(
                    "outbound_hosts: `{}` is not a host pattern ({why}); use `api.example.com` (HTTPS, port 443), `api.example.com:8443`, `*.example.com`, `*`, or `http://10.0.0.5:8080` — plain HTTP, and loopback or private addresses, only where a pattern names them",
                    greentic_manifest::clip_middle(host, 120)
                ))
            })
            .collect()
    }

    fn add_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
        outgoing_handler::add_to_linker::<_, Metered>(linker, |s| metered(s.imports()))
    }
}

impl wasmtime_wasi_http::WasiHttpView for Imports {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The outgoing-handler interface a component imports to call out.
pub const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler";

/// What any host resource is charged, besides what it holds.
pub const RESOURCE_BYTES: u64 = 256;
/// What each header value is charged besides its name and value (the map's own structures).
const HEADER_ENTRY_BYTES: u64 = 64;
pub use crate::outbound::FIELDS_LIMIT_BYTES;

/// The `wasi:http` view of a call, metered. Built for each host call from the call's state.
pub struct MeteredHttp<'a> {
    view: WasiHttpCtxView<'a>,
    budget: &'a mut HostBudget,
    in_flight: &'a Arc<AtomicUsize>,
    next: &'a NextInFlight,
    max_in_flight: usize,
}

/// [`HasData`] of [`MeteredHttp`], for `add_to_linker`.
pub struct Metered;

impl HasData for Metered {
    type Data<'a> = MeteredHttp<'a>;
}

/// The metered view of `imports`.
pub fn metered(imports: &mut Imports) -> MeteredHttp<'_> {
    let Imports {
        http,
        table,
        outbound,
        budget,
        in_flight,
        next_in_flight,
        max_in_flight,
        ..
    } = imports;
    MeteredHttp {
        view: WasiHttpCtxView {
            ctx: http,
            table,
            hooks: outbound,
        },
        budget,
        in_flight,
        next: next_in_flight,
        max_in_flight: *max_in_flight,
    }
}

/// Adds `wasi:http/types` to `linker`, metered: every provider may hold requests and responses
/// (a webhook provider answers with one); only [`OutboundHttp`] sends them.
pub fn add_types_to_linker<T: HasImports>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let options = wasmtime_wasi_http::p2::bindings::LinkOptions::default();
    types::add_to_linker::<_, Metered>(linker, &options.into(), |s| metered(s.imports()))
}

fn fields_bytes(fields: &FieldMap) -> u64 {
    RESOURCE_BYTES
        + fields
            .iter()
            .map(|(name, value)| {
                name.as_str().len() as u64 + value.len() as u64 + HEADER_ENTRY_BYTES
            })
            .sum::<u64>()
}

fn method_bytes(method: &types::Method) -> u64 {
    match method {
        types::Method::Other(m) => m.len() as u64,
        _ => 0,
    }
}

fn scheme_bytes(scheme: &Option<types::Scheme>) -> u64 {
    match scheme {
        Some(types::Scheme::Other(s)) => s.len() as u64,
        _ => 0,
    }
}

fn request_bytes(r: &HostOutgoingRequest) -> u64 {
    fields_bytes(&r.headers)
        + method_bytes(&r.method)
        + scheme_bytes(&r.scheme)
        + r.path_with_query.as_ref().map_or(0, |p| p.len() as u64)
        + r.authority.as_ref().map_or(0, |a| a.len() as u64)
        + if r.body.is_some() {
            OUTGOING_BODY_BUFFER_BYTES
        } else {
            0
        }
}

fn response_bytes(r: &HostOutgoingResponse) -> u64 {
    fields_bytes(&r.headers)
        + if r.body.is_some() {
            OUTGOING_BODY_BUFFER_BYTES
        } else {
            0
        }
}

fn trap(hit: ResourceLimitHit) -> wasmtime::Error {
    wasmtime::Error::new(hit)
}

impl MeteredHttp<'_> {
    fn charge(&mut self, rep: u32, bytes: u64, what: &'static str) -> wasmtime::Result<()> {
        self.budget.set(rep, bytes, what).map_err(trap)
    }

    fn charge_fields(&mut self, fields: &Resource<FieldMap>) -> wasmtime::Result<()> {
        let bytes = fields_bytes(self.view.table.get(fields)?);
        self.charge(fields.rep(), bytes, "header fields")
    }

    fn charge_request(&mut self, request: &Resource<HostOutgoingRequest>) -> wasmtime::Result<()> {
        let bytes = request_bytes(self.view.table.get(request)?);
        self.charge(request.rep(), bytes, "an outgoing request")
    }

    fn charge_response(
        &mut self,
        response: &Resource<HostOutgoingResponse>,
    ) -> wasmtime::Result<()> {
        let bytes = response_bytes(self.view.table.get(response)?);
        self.charge(response.rep(), bytes, "an outgoing response")
    }

    fn charge_new<T>(&mut self, r: &Resource<T>, what: &'static str) -> wasmtime::Result<()> {
        self.charge(r.rep(), RESOURCE_BYTES, what)
    }

    fn release<T>(&mut self, r: &Resource<T>) {
        self.budget.release(r.rep());
    }
}

impl types::Host for MeteredHttp<'_> {
    fn convert_error_code(&mut self, err: HttpError) -> wasmtime::Result<types::ErrorCode> {
        types::Host::convert_error_code(&mut self.view, err)
    }

    fn convert_header_error(&mut self, err: HeaderError) -> wasmtime::Result<types::HeaderError> {
        types::Host::convert_header_error(&mut self.view, err)
    }

    fn http_error_code(
        &mut self,
        err: Resource<types::IoError>,
    ) -> wasmtime::Result<Option<types::ErrorCode>> {
        types::Host::http_error_code(&mut self.view, err)
    }
}

impl types::HostFields for MeteredHttp<'_> {
    fn new(&mut self) -> wasmtime::Result<Resource<FieldMap>> {
        let fields = types::HostFields::new(&mut self.view)?;
        self.charge_fields(&fields)?;
        Ok(fields)
    }

    fn from_list(&mut self, entries: Vec<(String, Vec<u8>)>) -> HeaderResult<Resource<FieldMap>> {
        let fields = types::HostFields::from_list(&mut self.view, entries)?;
        self.charge_fields(&fields).map_err(HeaderError::trap)?;
        Ok(fields)
    }

    fn drop(&mut self, fields: Resource<FieldMap>) -> wasmtime::Result<()> {
        self.release(&fields);
        types::HostFields::drop(&mut self.view, fields)
    }

    fn get(&mut self, fields: Resource<FieldMap>, name: String) -> wasmtime::Result<Vec<Vec<u8>>> {
        types::HostFields::get(&mut self.view, fields, name)
    }

    fn has(&mut self, fields: Resource<FieldMap>, name: String) -> wasmtime::Result<bool> {
        types::HostFields::has(&mut self.view, fields, name)
    }

    fn set(
        &mut self,
        fields: Resource<FieldMap>,
        name: String,
        values: Vec<Vec<u8>>,
    ) -> HeaderResult<()> {
        let rep = Resource::<FieldMap>::new_borrow(fields.rep());
        types::HostFields::set(&mut self.view, fields, name, values)?;
        self.charge_fields(&rep).map_err(HeaderError::trap)
    }

    fn delete(&mut self, fields: Resource<FieldMap>, name: String) -> HeaderResult<()> {
        let rep = Resource::<FieldMap>::new_borrow(fields.rep());
        types::HostFields::delete(&mut self.view, fields, name)?;
        self.charge_fields(&rep).map_err(HeaderError::trap)
    }

    fn append(
        &mut self,
        fields: Resource<FieldMap>,
        name: String,
        value: Vec<u8>,
    ) -> HeaderResult<()> {
        let rep = Resource::<FieldMap>::new_borrow(fields.rep());
        types::HostFields::append(&mut self.view, fields, name, value)?;
        self.charge_fields(&rep).map_err(HeaderError::trap)
    }

    fn entries(&mut self, fields: Resource<FieldMap>) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        types::HostFields::entries(&mut self.view, fields)
    }

    fn clone(&mut self, fields: Resource<FieldMap>) -> wasmtime::Result<Resource<FieldMap>> {
        let copy = types::HostFields::clone(&mut self.view, fields)?;
        self.charge_fields(&copy)?;
        Ok(copy)
    }
}

impl types::HostIncomingRequest for MeteredHttp<'_> {
    fn method(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<types::Method> {
        types::HostIncomingRequest::method(&mut self.view, id)
    }

    fn path_with_query(
        &mut self,
        id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        types::HostIncomingRequest::path_with_query(&mut self.view, id)
    }

    fn scheme(
        &mut self,
        id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Option<types::Scheme>> {
        types::HostIncomingRequest::scheme(&mut self.view, id)
    }

    fn authority(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<Option<String>> {
        types::HostIncomingRequest::authority(&mut self.view, id)
    }

    fn headers(
        &mut self,
        id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Resource<FieldMap>> {
        let fields = types::HostIncomingRequest::headers(&mut self.view, id)?;
        self.charge_fields(&fields)?;
        Ok(fields)
    }

    fn consume(
        &mut self,
        id: Resource<HostIncomingRequest>,
    ) -> wasmtime::Result<Result<Resource<HostIncomingBody>, ()>> {
        let body = types::HostIncomingRequest::consume(&mut self.view, id)?;
        if let Ok(body) = &body {
            self.charge_new(body, "an incoming body")?;
        }
        Ok(body)
    }

    fn drop(&mut self, id: Resource<HostIncomingRequest>) -> wasmtime::Result<()> {
        self.release(&id);
        types::HostIncomingRequest::drop(&mut self.view, id)
    }
}

impl types::HostOutgoingRequest for MeteredHttp<'_> {
    fn new(
        &mut self,
        headers: Resource<FieldMap>,
    ) -> wasmtime::Result<Resource<HostOutgoingRequest>> {
        self.release(&headers);
        let request = types::HostOutgoingRequest::new(&mut self.view, headers)?;
        self.charge_request(&request)?;
        Ok(request)
    }

    fn body(
        &mut self,
        request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Result<Resource<HostOutgoingBody>, ()>> {
        let rep = Resource::<HostOutgoingRequest>::new_borrow(request.rep());
        let body = types::HostOutgoingRequest::body(&mut self.view, request)?;
        if let Ok(body) = &body {
            // The body's buffer is the request's: it is charged there.
            self.charge_new(body, "an outgoing body")?;
            self.charge_request(&rep)?;
        }
        Ok(body)
    }

    fn drop(&mut self, request: Resource<HostOutgoingRequest>) -> wasmtime::Result<()> {
        self.release(&request);
        types::HostOutgoingRequest::drop(&mut self.view, request)
    }

    fn method(
        &mut self,
        request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<types::Method> {
        types::HostOutgoingRequest::method(&mut self.view, request)
    }

    fn set_method(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        method: types::Method,
    ) -> wasmtime::Result<Result<(), ()>> {
        let rep = Resource::<HostOutgoingRequest>::new_borrow(request.rep());
        let r = types::HostOutgoingRequest::set_method(&mut self.view, request, method)?;
        self.charge_request(&rep)?;
        Ok(r)
    }

    fn path_with_query(
        &mut self,
        request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        types::HostOutgoingRequest::path_with_query(&mut self.view, request)
    }

    fn set_path_with_query(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        path_with_query: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        let rep = Resource::<HostOutgoingRequest>::new_borrow(request.rep());
        let r = types::HostOutgoingRequest::set_path_with_query(
            &mut self.view,
            request,
            path_with_query,
        )?;
        self.charge_request(&rep)?;
        Ok(r)
    }

    fn scheme(
        &mut self,
        request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Option<types::Scheme>> {
        types::HostOutgoingRequest::scheme(&mut self.view, request)
    }

    fn set_scheme(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        scheme: Option<types::Scheme>,
    ) -> wasmtime::Result<Result<(), ()>> {
        let rep = Resource::<HostOutgoingRequest>::new_borrow(request.rep());
        let r = types::HostOutgoingRequest::set_scheme(&mut self.view, request, scheme)?;
        self.charge_request(&rep)?;
        Ok(r)
    }

    fn authority(
        &mut self,
        request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        types::HostOutgoingRequest::authority(&mut self.view, request)
    }

    fn set_authority(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        authority: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        let rep = Resource::<HostOutgoingRequest>::new_borrow(request.rep());
        let r = types::HostOutgoingRequest::set_authority(&mut self.view, request, authority)?;
        self.charge_request(&rep)?;
        Ok(r)
    }

    fn headers(
        &mut self,
        request: Resource<HostOutgoingRequest>,
    ) -> wasmtime::Result<Resource<FieldMap>> {
        let fields = types::HostOutgoingRequest::headers(&mut self.view, request)?;
        self.charge_fields(&fields)?;
        Ok(fields)
    }
}

impl types::HostResponseOutparam for MeteredHttp<'_> {
    fn drop(&mut self, id: Resource<HostResponseOutparam>) -> wasmtime::Result<()> {
        types::HostResponseOutparam::drop(&mut self.view, id)
    }

    fn set(
        &mut self,
        id: Resource<HostResponseOutparam>,
        response: Result<Resource<HostOutgoingResponse>, types::ErrorCode>,
    ) -> wasmtime::Result<()> {
        if let Ok(r) = &response {
            self.release(r);
        }
        types::HostResponseOutparam::set(&mut self.view, id, response)
    }

    fn send_informational(
        &mut self,
        id: Resource<HostResponseOutparam>,
        status: u16,
        headers: Resource<FieldMap>,
    ) -> HttpResult<()> {
        types::HostResponseOutparam::send_informational(&mut self.view, id, status, headers)
    }
}

impl types::HostIncomingResponse for MeteredHttp<'_> {
    fn drop(&mut self, response: Resource<HostIncomingResponse>) -> wasmtime::Result<()> {
        self.release(&response);
        types::HostIncomingResponse::drop(&mut self.view, response)
    }

    fn status(
        &mut self,
        response: Resource<HostIncomingResponse>,
    ) -> wasmtime::Result<types::StatusCode> {
        types::HostIncomingResponse::status(&mut self.view, response)
    }

    fn headers(
        &mut self,
        response: Resource<HostIncomingResponse>,
    ) -> wasmtime::Result<Resource<FieldMap>> {
        let fields = types::HostIncomingResponse::headers(&mut self.view, response)?;
        self.charge_fields(&fields)?;
        Ok(fields)
    }

    fn consume(
        &mut self,
        response: Resource<HostIncomingResponse>,
    ) -> wasmtime::Result<Result<Resource<HostIncomingBody>, ()>> {
        let body = types::HostIncomingResponse::consume(&mut self.view, response)?;
        if let Ok(body) = &body {
            self.charge_new(body, "an incoming body")?;
        }
        Ok(body)
    }
}

impl types::HostFutureTrailers for MeteredHttp<'_> {
    fn drop(&mut self, id: Resource<HostFutureTrailers>) -> wasmtime::Result<()> {
        self.release(&id);
        types::HostFutureTrailers::drop(&mut self.view, id)
    }

    fn subscribe(
        &mut self,
        id: Resource<HostFutureTrailers>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        types::HostFutureTrailers::subscribe(&mut self.view, id)
    }

    fn get(
        &mut self,
        id: Resource<HostFutureTrailers>,
    ) -> wasmtime::Result<
        Option<Result<Result<Option<Resource<types::Trailers>>, types::ErrorCode>, ()>>,
    > {
        let got = types::HostFutureTrailers::get(&mut self.view, id)?;
        if let Some(Ok(Ok(Some(fields)))) = &got {
            self.charge_fields(fields)?;
        }
        Ok(got)
    }
}

impl types::HostIncomingBody for MeteredHttp<'_> {
    fn stream(
        &mut self,
        id: Resource<HostIncomingBody>,
    ) -> wasmtime::Result<Result<Resource<DynInputStream>, ()>> {
        types::HostIncomingBody::stream(&mut self.view, id)
    }

    fn finish(
        &mut self,
        id: Resource<HostIncomingBody>,
    ) -> wasmtime::Result<Resource<HostFutureTrailers>> {
        self.release(&id);
        let trailers = types::HostIncomingBody::finish(&mut self.view, id)?;
        self.charge_new(&trailers, "future trailers")?;
        Ok(trailers)
    }

    fn drop(&mut self, id: Resource<HostIncomingBody>) -> wasmtime::Result<()> {
        self.release(&id);
        types::HostIncomingBody::drop(&mut self.view, id)
    }
}

impl types::HostOutgoingResponse for MeteredHttp<'_> {
    fn new(
        &mut self,
        headers: Resource<FieldMap>,
    ) -> wasmtime::Result<Resource<HostOutgoingResponse>> {
        self.release(&headers);
        let response = types::HostOutgoingResponse::new(&mut self.view, headers)?;
        self.charge_response(&response)?;
        Ok(response)
    }

    fn body(
        &mut self,
        id: Resource<HostOutgoingResponse>,
    ) -> wasmtime::Result<Result<Resource<HostOutgoingBody>, ()>> {
        let rep = Resource::<HostOutgoingResponse>::new_borrow(id.rep());
        let body = types::HostOutgoingResponse::body(&mut self.view, id)?;
        if let Ok(body) = &body {
            self.charge_new(body, "an outgoing body")?;
            self.charge_response(&rep)?;
        }
        Ok(body)
    }

    fn status_code(
        &mut self,
        id: Resource<HostOutgoingResponse>,
    ) -> wasmtime::Result<types::StatusCode> {
        types::HostOutgoingResponse::status_code(&mut self.view, id)
    }

    fn set_status_code(
        &mut self,
        id: Resource<HostOutgoingResponse>,
        status: types::StatusCode,
    ) -> wasmtime::Result<Result<(), ()>> {
        types::HostOutgoingResponse::set_status_code(&mut self.view, id, status)
    }

    fn headers(
        &mut self,
        id: Resource<HostOutgoingResponse>,
    ) -> wasmtime::Result<Resource<FieldMap>> {
        let fields = types::HostOutgoingResponse::headers(&mut self.view, id)?;
        self.charge_fields(&fields)?;
        Ok(fields)
    }

    fn drop(&mut self, id: Resource<HostOutgoingResponse>) -> wasmtime::Result<()> {
        self.release(&id);
        types::HostOutgoingResponse::drop(&mut self.view, id)
    }
}

impl types::HostFutureIncomingResponse for MeteredHttp<'_> {
    fn drop(&mut self, id: Resource<HostFutureIncomingResponse>) -> wasmtime::Result<()> {
        self.release(&id);
        types::HostFutureIncomingResponse::drop(&mut self.view, id)
    }

    fn get(
        &mut self,
        id: Resource<HostFutureIncomingResponse>,
    ) -> wasmtime::Result<
        Option<Result<Result<Resource<HostIncomingResponse>, types::ErrorCode>, ()>>,
    > {
        let got = types::HostFutureIncomingResponse::get(&mut self.view, id)?;
        if let Some(Ok(Ok(response))) = &got {
            let bytes = fields_bytes(&self.view.table.get(response)?.headers);
            self.charge(response.rep(), bytes, "an incoming response")?;
        }
        Ok(got)
    }

    fn subscribe(
        &mut self,
        id: Resource<HostFutureIncomingResponse>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        types::HostFutureIncomingResponse::subscribe(&mut self.view, id)
    }
}

impl types::HostOutgoingBody for MeteredHttp<'_> {
    fn write(
        &mut self,
        id: Resource<HostOutgoingBody>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        types::HostOutgoingBody::write(&mut self.view, id)
    }

    fn finish(
        &mut self,
        id: Resource<HostOutgoingBody>,
        trailers: Option<Resource<types::Trailers>>,
    ) -> HttpResult<()> {
        self.release(&id);
        if let Some(t) = &trailers {
            self.release(t);
        }
        types::HostOutgoingBody::finish(&mut self.view, id, trailers)
    }

    fn drop(&mut self, id: Resource<HostOutgoingBody>) -> wasmtime::Result<()> {
        self.release(&id);
        types::HostOutgoingBody::drop(&mut self.view, id)
    }
}

impl types::HostRequestOptions for MeteredHttp<'_> {
    fn new(&mut self) -> wasmtime::Result<Resource<RequestOptions>> {
        let options = types::HostRequestOptions::new(&mut self.view)?;
        self.charge_new(&options, "request options")?;
        Ok(options)
    }

    fn connect_timeout(
        &mut self,
        opts: Resource<RequestOptions>,
    ) -> wasmtime::Result<Option<types::Duration>> {
        types::HostRequestOptions::connect_timeout(&mut self.view, opts)
    }

    fn set_connect_timeout(
        &mut self,
        opts: Resource<RequestOptions>,
        duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        types::HostRequestOptions::set_connect_timeout(&mut self.view, opts, duration)
    }

    fn first_byte_timeout(
        &mut self,
        opts: Resource<RequestOptions>,
    ) -> wasmtime::Result<Option<types::Duration>> {
        types::HostRequestOptions::first_byte_timeout(&mut self.view, opts)
    }

    fn set_first_byte_timeout(
        &mut self,
        opts: Resource<RequestOptions>,
        duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        types::HostRequestOptions::set_first_byte_timeout(&mut self.view, opts, duration)
    }

    fn between_bytes_timeout(
        &mut self,
        opts: Resource<RequestOptions>,
    ) -> wasmtime::Result<Option<types::Duration>> {
        types::HostRequestOptions::between_bytes_timeout(&mut self.view, opts)
    }

    fn set_between_bytes_timeout(
        &mut self,
        opts: Resource<RequestOptions>,
        duration: Option<types::Duration>,
    ) -> wasmtime::Result<Result<(), ()>> {
        types::HostRequestOptions::set_between_bytes_timeout(&mut self.view, opts, duration)
    }

    fn drop(&mut self, rep: Resource<RequestOptions>) -> wasmtime::Result<()> {
        self.release(&rep);
        types::HostRequestOptions::drop(&mut self.view, rep)
    }
}

impl outgoing_handler::Host for MeteredHttp<'_> {
    fn handle(
        &mut self,
        request: Resource<HostOutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
    ) -> HttpResult<Resource<HostFutureIncomingResponse>> {
        // `options` is handed over with the request: nothing else will delete it.
        let options_rep = options.as_ref().map(Resource::rep);
        let forget_options = |this: &mut Self| {
            if let Some(rep) = options_rep {
                this.budget.release(rep);
                let _ = this
                    .view
                    .table
                    .delete(Resource::<RequestOptions>::new_own(rep));
            }
        };
        let request_bytes = self.budget.release(request.rep());
        if self.in_flight.load(Ordering::Acquire) >= self.max_in_flight {
            let _ = self.view.table.delete(request);
            forget_options(self);
            return Err(types::ErrorCode::ConnectionLimitReached.into());
        }
        let charge = self
            .budget
            .shared()
            .try_charge(
                request_bytes + CONNECTION_BYTES,
                "an outgoing request in flight",
            )
            .map_err(|hit| HttpError::trap(trap(hit)))?;
        let guard = InFlight::enter(self.in_flight, Some(charge));
        *self.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(guard);
        let result = outgoing_handler::Host::handle(&mut self.view, request, options);
        // A guard the hooks did not take (the request failed before it was sent) ends here.
        self.next.lock().unwrap_or_else(|e| e.into_inner()).take();
        forget_options(self);
        let future = result?;
        self.charge_new(&future, "a response future")
            .map_err(HttpError::trap)?;
        Ok(future)
    }
}
