// The in-process MCP call of the `mcp` module's examples: included by its doctests, not a
// module of the crate.

use mcp_call::call_tool;

mod mcp_call {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use rmcp::model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest,
        ProgressNotificationParam, Request,
    };
    use rmcp::service::{NotificationContext, PeerRequestOptions, RequestContext};
    use rmcp::{ClientHandler, ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt};

    type Handler = Box<
        dyn FnOnce(RequestContext<RoleServer>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send,
    >;

    /// A server whose one tool is the handler given.
    #[derive(Clone)]
    struct OneTool(Arc<Mutex<Option<Handler>>>);

    impl ServerHandler for OneTool {
        async fn call_tool(
            &self,
            _request: CallToolRequestParams,
            context: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            let handler = self.0.lock().unwrap().take();
            if let Some(handler) = handler {
                handler(context).await;
            }
            Ok(CallToolResponse::Complete(CallToolResult::success(vec![])))
        }
    }

    /// A client that keeps the progress notifications it gets.
    #[derive(Clone, Default)]
    struct Progress(Arc<Mutex<Vec<ProgressNotificationParam>>>);

    impl ClientHandler for Progress {
        async fn on_progress(
            &self,
            params: ProgressNotificationParam,
            _: NotificationContext<RoleClient>,
        ) {
            self.0.lock().unwrap().push(params);
        }
    }

    /// Calls `tool` as the handler of one tool call over an in-process connection (rmcp's client
    /// and server over a duplex), with a progress token; returns its output and the progress
    /// notifications the client got, by `progress`.
    pub(crate) async fn call_tool<R, Fut>(
        tool: impl FnOnce(RequestContext<RoleServer>) -> Fut + Send + 'static,
    ) -> (R, Vec<ProgressNotificationParam>)
    where
        Fut: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let (output_tx, output_rx) = tokio::sync::oneshot::channel();
        let handler: Handler = Box::new(move |context| {
            Box::pin(async move {
                let _ = output_tx.send(tool(context).await);
            })
        });
        let (server_io, client_io) = tokio::io::duplex(1 << 16);
        let server = OneTool(Arc::new(Mutex::new(Some(handler))));
        tokio::spawn(async move {
            if let Ok(running) = server.serve(server_io).await {
                let _ = running.waiting().await;
            }
        });
        let progress = Progress::default();
        let client = progress.clone().serve(client_io).await.unwrap();
        let request =
            ClientRequest::CallToolRequest(Request::new(CallToolRequestParams::new("tool")));
        let handle = client
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .unwrap();
        handle.await_response().await.unwrap();
        let output = output_rx.await.unwrap();
        // The client handles each notification on a task of its own: let them finish.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut got = progress.0.lock().unwrap().clone();
        got.sort_by(|a, b| a.progress.total_cmp(&b.progress));
        let _ = client.cancel().await;
        (output, got)
    }
}
