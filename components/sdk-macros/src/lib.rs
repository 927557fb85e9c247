//! The `#[provider]` attribute of `greentic-provider-sdk`. Use it through the SDK
//! (`greentic_provider_sdk::provider`); this crate only generates code that names the SDK.

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Error, ItemImpl, LitStr, Token, parse_macro_input};

/// Marks the impl block of a provider: `impl Messaging for MyProvider { … }` (or `Webhook`,
/// `Timer`). Keeps the impl as written, embeds the crate's `provider.json` in the component and
/// exports the provider in its domain's world, wrapped so that every call gets the provider's
/// span, its outcome and the `calls` counter. Options: `manifest = "path.json"` (relative to
/// the crate root) embeds another manifest file. Do not also call `provider_manifest!()`: the
/// component would carry the manifest twice, and the host refuses it.
///
/// ```text
/// use greentic_provider_sdk::prelude::*;
///
/// struct Echo;
///
/// #[provider]
/// impl Messaging for Echo {
///     fn send(ctx: &Ctx, msg: Message) -> Result<SendResult, ProviderError> {
///         Ok(SendResult { id: format!("{}:{}", ctx.tenant, msg.to), delivered_at_ms: now_ms() })
///     }
/// }
/// ```
#[proc_macro_attribute]
pub fn provider(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr as Options);
    let block = parse_macro_input!(item as ItemImpl);
    expand(options, block)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// The attribute's options.
#[derive(Default)]
struct Options {
    manifest: Option<LitStr>,
}

impl Parse for Options {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut options = Options::default();
        while !input.is_empty() {
            let key: syn::Ident = input.parse()?;
            input.parse::<Token![=]>()?;
            match key.to_string().as_str() {
                "manifest" => options.manifest = Some(input.parse()?),
                other => {
                    return Err(Error::new(
                        key.span(),
                        format!(
                            "unknown option `{other}`; the only option is `manifest = \"provider.json\"`"
                        ),
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(options)
    }
}

/// The domain traits the attribute knows, by the last segment of the implemented trait's path.
const DOMAINS: &[&str] = &["Messaging", "Webhook", "Timer"];

fn expand(options: Options, block: ItemImpl) -> syn::Result<proc_macro2::TokenStream> {
    let Some((_, trait_path, _)) = &block.trait_ else {
        return Err(Error::new_spanned(
            &block.self_ty,
            "#[provider] goes on the impl of a domain trait: `impl Messaging for MyProvider`, `impl Webhook for …` or `impl Timer for …`",
        ));
    };
    if !block.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &block.generics,
            "a provider type cannot be generic: the component exports exactly one",
        ));
    }
    let domain = trait_path
        .segments
        .last()
        .map(|s| s.ident.to_string())
        .unwrap_or_default();
    let ty = &block.self_ty;
    let sdk = quote!(::greentic_provider_sdk);
    let manifest = options
        .manifest
        .unwrap_or_else(|| LitStr::new("provider.json", Span::call_site()));
    let export = match domain.as_str() {
        "Messaging" => quote! {
            #[doc(hidden)]
            pub struct __GreenticProviderExport;
            impl #sdk::messaging::exports::greentic::messaging::outbound::Guest
                for __GreenticProviderExport
            {
                fn send(
                    ctx: #sdk::types::TenantCtx,
                    msg: #sdk::prelude::Message,
                ) -> ::core::result::Result<#sdk::prelude::SendResult, #sdk::types::ProviderError> {
                    #sdk::__export::send::<#ty>(env!("CARGO_PKG_NAME"), ctx, msg)
                }
            }
            #sdk::export_messaging_provider!(__GreenticProviderExport);
        },
        "Webhook" => quote! {
            #[doc(hidden)]
            pub struct __GreenticProviderExport;
            impl #sdk::webhook::exports::wasi::http::incoming_handler::Guest
                for __GreenticProviderExport
            {
                fn handle(
                    request: #sdk::webhook::wasi::http::types::IncomingRequest,
                    out: #sdk::webhook::wasi::http::types::ResponseOutparam,
                ) {
                    #sdk::__export::handle::<#ty>(env!("CARGO_PKG_NAME"), request, out)
                }
            }
            #sdk::export_webhook_handler!(__GreenticProviderExport);
        },
        "Timer" => quote! {
            #[doc(hidden)]
            pub struct __GreenticProviderExport;
            impl #sdk::timer::exports::greentic::timer::schedule::Guest
                for __GreenticProviderExport
            {
                fn on_fire(
                    ctx: #sdk::types::TenantCtx,
                    info: #sdk::prelude::FireInfo,
                ) -> ::core::result::Result<(), #sdk::types::ProviderError> {
                    #sdk::__export::on_fire::<#ty>(env!("CARGO_PKG_NAME"), ctx, info)
                }
            }
            #sdk::export_timer_provider!(__GreenticProviderExport);
        },
        other => {
            return Err(Error::new_spanned(
                trait_path,
                format!(
                    "`{other}` is not a domain trait of the SDK; implement one of {}",
                    DOMAINS.join(", ")
                ),
            ));
        }
    };
    Ok(quote! {
        #block
        #sdk::provider_manifest!(#manifest);
        const _: () = {
            #export
        };
    })
}
