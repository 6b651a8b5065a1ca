//! Small server-rendered pages that the links in mail land on, so every flow works without a
//! separate frontend. Operators can point the links at their own frontend instead (settings).

use tera::{Context, Tera};

pub struct Pages {
    tera: Tera,
}

impl Pages {
    pub fn new() -> Self {
        let mut tera = Tera::default();
        tera.add_raw_templates([
            ("base.html", include_str!("../../templates/base.html")),
            (
                "email_confirmed.html",
                include_str!("../../templates/email_confirmed.html"),
            ),
            (
                "confirm_email.html",
                include_str!("../../templates/confirm_email.html"),
            ),
            (
                "reset_password.html",
                include_str!("../../templates/reset_password.html"),
            ),
            ("action.html", include_str!("../../templates/action.html")),
            (
                "signed_in.html",
                include_str!("../../templates/signed_in.html"),
            ),
            (
                "passkeys.html",
                include_str!("../../templates/passkeys.html"),
            ),
        ])
        .expect("the embedded page templates parse");
        tera.autoescape_on(vec![".html"]);
        Self { tera }
    }

    /// Renders `name` with `values`; HTML-escaped throughout.
    pub fn render(&self, name: &str, values: &[(&str, &str)]) -> Result<String, tera::Error> {
        let mut context = Context::new();
        for (key, value) in values {
            context.insert(*key, value);
        }
        self.tera.render(name, &context)
    }
}

/// The pages' scripts and stylesheet, served from files because the pages' Content-Security-Policy
/// allows no inline script or style. `(content type, body)` by file name.
pub fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "pages.css" => Some((
            "text/css; charset=utf-8",
            include_str!("../../assets/pages.css"),
        )),
        "confirm-email.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("../../assets/confirm-email.js"),
        )),
        "reset-password.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("../../assets/reset-password.js"),
        )),
        "action.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("../../assets/action.js"),
        )),
        "signed-in.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("../../assets/signed-in.js"),
        )),
        "passkeys.js" => Some((
            "text/javascript; charset=utf-8",
            include_str!("../../assets/passkeys.js"),
        )),
        _ => None,
    }
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}
