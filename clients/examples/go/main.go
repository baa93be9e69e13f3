// A Go client of Tailor over TLS with a bearer token: Ping, Recommend (with an x-request-id),
// a TrackEventStream of three batches, a PlanCampaign stream, and a refusal's status.
// Build and run: README.md beside this file.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	tailorv1 "tailor.ai/protos/tailor/v1"
)

// bearer sends `authorization: Bearer <token>` with every call, and only over TLS.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return true }

func dial(addr, caFile, token string) (*grpc.ClientConn, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	return grpc.Dial(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: pool})),
		grpc.WithPerRPCCredentials(bearer(token)),
		// replies may be up to the server's grpc_max_message_bytes (64 MiB); Go's default is 4 MiB
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
}

func events(user string, first, n int) *tailorv1.TrackEventsRequest {
	now := float64(time.Now().UnixNano()) / 1e9 // timestamps: seconds since the epoch
	req := &tailorv1.TrackEventsRequest{}
	for i := first; i < first+n; i++ {
		req.Events = append(req.Events, &tailorv1.Event{EventId: fmt.Sprintf("%s-%d", user, i),
			UserId: user, Type: "view", Channel: "web", ItemId: fmt.Sprint(i), Timestamp: now - float64(n-i)})
	}
	return req
}

func main() {
	addr := flag.String("addr", "127.0.0.1:50051", "server host:port (a name or address its certificate carries)")
	ca := flag.String("ca", "ca.pem", "the CA that signed the server's certificate")
	user := flag.String("user", "10", "a user id")
	campaign := flag.String("campaign", "", "a campaign id to plan (PlanCampaign), if any")
	flag.Parse()
	token := os.Getenv("TAILOR_TOKEN") // roles decider and tracker
	conn, err := dial(*addr, *ca, token)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", "go-example-1")

	if _, err := tailorv1.NewDiagnosticsServiceClient(conn).Ping(ctx, &tailorv1.PingRequest{}); err != nil {
		log.Fatalf("Ping: %v", err)
	}
	recs := tailorv1.NewRecommendationServiceClient(conn)
	var trailer metadata.MD
	rec, err := recs.Recommend(ctx, &tailorv1.RecommendRequest{UserId: *user, K: 5, Channel: "web"}, grpc.Trailer(&trailer))
	if err != nil {
		log.Fatalf("Recommend: %v", err)
	}
	fmt.Printf("Recommend: model %s, request id %s (trailer %v), %d items\n",
		rec.ModelVersion, rec.RequestId, trailer.Get("x-request-id"), len(rec.Items))
	for _, item := range rec.Items {
		fmt.Printf("  %s %.4f %s\n", item.ItemId, item.Score, item.Title)
	}

	// a refusal: the code, and the message naming what was wrong
	_, err = recs.Recommend(ctx, &tailorv1.RecommendRequest{UserId: *user, K: 0})
	fmt.Printf("Recommend k=0: %s: %s\n", status.Code(err), status.Convert(err).Message())

	// client stream: batches, then one answer for them all
	stream, err := tailorv1.NewProfileServiceClient(conn).TrackEventStream(ctx)
	for b := 0; err == nil && b < 3; b++ {
		err = stream.Send(events(*user, 3*b, 3))
	}
	if err == nil {
		var tracked *tailorv1.TrackEventsResponse
		if tracked, err = stream.CloseAndRecv(); err == nil {
			fmt.Printf("TrackEventStream: %d accepted, %d rejected\n", tracked.Accepted, len(tracked.Rejected))
		}
	}
	if err != nil {
		log.Fatalf("TrackEventStream: %v", err)
	}

	if *campaign == "" {
		return
	}
	// bidirectional: send the audience, half-close, read decisions until the status
	plan, err := tailorv1.NewCampaignServiceClient(conn).PlanCampaign(ctx)
	if err == nil {
		err = plan.Send(&tailorv1.PlanCampaignRequest{CampaignId: *campaign, UserIds: []string{*user, "p1", "p2"}})
	}
	if err == nil {
		err = plan.CloseSend()
	}
	for err == nil {
		var part *tailorv1.PlanCampaignResponse
		if part, err = plan.Recv(); err == nil {
			for _, d := range part.Decisions {
				fmt.Printf("PlanCampaign: %s -> %q (suppressed %v %s)\n", d.UserId, d.VariantId, d.Suppressed, d.Reason)
			}
		}
	}
	if err != io.EOF {
		log.Fatalf("PlanCampaign: %s: %s", status.Code(err), status.Convert(err).Message())
	}
}
