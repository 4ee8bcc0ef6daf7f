use axum::response::IntoResponse;
use http_body_util::BodyExt;
fn main() {
    let text: &'static str = Box::leak(
        (0..64)
            .map(|n| format!("{n:02} {}\n", "x".repeat(60)))
            .collect::<String>()
            .into_boxed_str(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let which = std::env::args().nth(1).unwrap();
    let n = 20_000;
    let total = rt.block_on(async move {
        let mut body = if which == "ours" {
            let s = futures_util::stream::iter(
                (0..n).map(move |_| sse_runtime::MessageEvent::new(text)),
            );
            sse_runtime::Sse::new(s)
                .keep_alive(sse_runtime::KeepAlive::disabled())
                .into_response()
                .into_body()
        } else {
            let s = futures_util::stream::iter((0..n).map(move |_| {
                Ok::<_, std::convert::Infallible>(axum::response::sse::Event::default().data(text))
            }));
            axum::response::sse::Sse::new(s).into_response().into_body()
        };
        let mut bytes = 0;
        while let Some(f) = body.frame().await {
            bytes += f.unwrap().data_ref().map_or(0, |d| d.len());
        }
        bytes
    });
    println!("{total}");
}
