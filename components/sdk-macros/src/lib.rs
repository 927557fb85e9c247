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

fn expand(options: Options, block: ItemImpl) -> syn::Result<proc_macro2::TokenStream> {
    let Some((_, trait_path, _)) = &block.trait_ else {
        return Err(Error::new_spanned(
            &block.self_ty,
            "#[provider] goes on the impl of a domain trait of the SDK: `impl Messaging for MyProvider`, `impl Webhook for …`, `impl Timer for …`",
        ));
    };
    if !block.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &block.generics,
            "a provider type cannot be generic: the component exports exactly one",
        ));
    }
    let Some(domain) = trait_path.segments.last().map(|s| s.ident.clone()) else {
        return Err(Error::new_spanned(
            trait_path,
            "#[provider] needs a trait name",
        ));
    };
    let ty = &block.self_ty;
    let sdk = quote!(::greentic_provider_sdk);
    let manifest = options
        .manifest
        .unwrap_or_else(|| LitStr::new("provider.json", Span::call_site()));
    // Which domain the trait is, and how its provider is exported, is the SDK's to say
    // (`__export_provider!`): this attribute knows no domain.
    let export = quote! {
        #sdk::__export_provider!(#domain, #ty);
    };
    Ok(quote! {
        #block
        #sdk::provider_manifest!(#manifest);
        const _: () = {
            #export
        };
    })
}
