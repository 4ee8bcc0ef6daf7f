//! Checks that span the whole controller: route collisions, path parameters
//! against `Path` extractors, `State` against the declared state.

use std::collections::HashMap;

use syn::spanned::Spanned;

use crate::controller::model::{ArgKind, Controller, Route};
use crate::errors::{Errors, error_with_help};

pub fn check(controller: &Controller, errors: &mut Errors) {
    if let Some(span) = controller.existing_router {
        errors.push(error_with_help(
            span,
            "#[sse_controller] generates a `router` method, and this impl block already has one",
            "rename this method",
        ));
    }
    check_collisions(&controller.routes, errors);
    for route in &controller.routes {
        check_path_extractor(route, errors);
        if controller.state.is_none() {
            check_state_declared(route, errors);
        }
    }
}

/// Two routes with the same shape (parameter names aside) either serve the same
/// method twice, or use different parameter names for one path: axum's router
/// panics at start-up on both.
fn check_collisions(routes: &[Route], errors: &mut Errors) {
    let mut first_by_shape: HashMap<String, Vec<&Route>> = HashMap::new();
    for route in routes {
        let earlier = first_by_shape.entry(route.path.path_shape()).or_default();
        for other in earlier.iter() {
            let (message, help) = if other.method == route.method {
                (
                    format!(
                        "{} {} is already served by `{}`",
                        route.method.name(),
                        route.path.axum,
                        other.ident
                    ),
                    "give one of the two routes another path or method",
                )
            } else if other.path.axum != route.path.axum {
                (
                    format!(
                        "`{}` and `{}` (of `{}`) are the same route with different parameter names, \
                         which axum cannot route",
                        route.path.axum, other.path.axum, other.ident
                    ),
                    "use the same parameter names in both",
                )
            } else {
                continue;
            };
            errors.push(error_with_help(route.path_literal.span(), message, help));
            break;
        }
        earlier.push(route);
    }
}

fn check_path_extractor(route: &Route, errors: &mut Errors) {
    let path_arg = route.args.iter().find(|arg| arg.kind == ArgKind::Path);
    match (route.path.params.is_empty(), path_arg) {
        (false, None) => {
            let names = route.path.params.join("`, `");
            let example = match route.path.params.as_slice() {
                [one] => format!("`Path({}): Path<String>`", snake_case(one)),
                many => format!(
                    "`Path(({})): Path<({})>`",
                    many.iter()
                        .map(|n| snake_case(n))
                        .collect::<Vec<_>>()
                        .join(", "),
                    many.iter().map(|_| "String").collect::<Vec<_>>().join(", ")
                ),
            };
            errors.push(error_with_help(
                route.path_literal.span(),
                format!(
                    "the path `{}` has the parameter `{names}`, but `{}` takes no `Path` extractor",
                    route.path.axum, route.ident
                ),
                format!("add an argument {example}"),
            ));
        }
        (true, Some(arg)) => errors.push(error_with_help(
            arg.ty.span(),
            format!(
                "`{}` takes a `Path` extractor, but its path `{}` has no parameter",
                route.ident, route.path.axum
            ),
            "add a parameter such as `/:id` to the path, or remove this argument",
        )),
        _ => {}
    }
}

fn check_state_declared(route: &Route, errors: &mut Errors) {
    for arg in route.args.iter().filter(|arg| arg.kind == ArgKind::State) {
        errors.push(error_with_help(
            arg.ty.span(),
            "a `State` extractor needs the controller's state type",
            "declare it on the controller: #[sse_controller(\"/prefix\", state = AppState)]",
        ));
    }
}

/// `userId` → `user_id`, for the hint's example binding.
fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}
