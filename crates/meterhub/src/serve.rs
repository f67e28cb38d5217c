//! `meterhub serve`.

use anyhow::Context;

use crate::config::{GlobalArgs, ServeArgs, Settings};

pub async fn run(g: &GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(g, &args)?;
    let (hub, store) = crate::local::open_hub(&settings, crate::local::ClockFrom::Settings).await?;
    let fleet = crate::local::attach_fleet(&hub, &settings).await?;
    crate::allocator::for_serving();
    let dispatcher = tokio::spawn(hub.clone().run_dispatcher(std::time::Duration::from_millis(200)));
    // Alerts pushed to the webhooks parties set.
    let webhooks = tokio::spawn(hub.clone().run_webhooks(std::time::Duration::from_secs(1)));
    // Systems with something to do on their own (a held change, a prepayment threshold).
    let waker = tokio::spawn(fleet.fleet.clone().run_wakeups(std::time::Duration::from_millis(200)));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    println!("meterhub listening on http://{addr} (API docs: http://{addr}/docs)");
    tracing::info!(
        message = "Hub started.",
        addr = %addr,
        data_dir = %settings.data_dir.display(),
        clock = ?settings.clock,
        now = %hub.now()
    );
    let app = api::router(hub.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await.context("server failed")?;
    dispatcher.abort();
    hub.drain_dispatch().await;
    webhooks.abort();
    waker.abort();
    fleet.close().await;
    store.close().await;
    tracing::info!(message = "Hub stopped; all acknowledged writes are committed.");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
