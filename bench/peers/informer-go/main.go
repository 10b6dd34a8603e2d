// Command informer-go is the benchmark peer "a Go informer you write yourself":
// client-go's dynamic shared informer feeding go-redis, writing the same keys,
// hash layout, resourceVersion compare and change feed as kube2redis.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

//go:embed apply.lua
var applyLua string

// apply does what projector/apply.lua does for one object: compare resourceVersions
// (longer is newer, equal length compares as text), write hash + index, feed a change.
var apply = redis.NewScript(applyLua)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig")
	redisAddr := flag.String("redis-addr", "127.0.0.1:6379", "Redis host:port")
	namespace := flag.String("namespace", "", "namespace (all if empty)")
	prefix := flag.String("prefix", "k8s", "key prefix")
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	client := dynamic.NewForConfigOrDie(cfg)
	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr})
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

	gvr := schema.GroupVersionResource{Group: "batch.volcano.sh", Version: "v1alpha1", Resource: "jobs"}
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, 0, *namespace, nil)
	write := func(typ string, obj interface{}) {
		if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tomb.Obj
		}
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		body, err := json.Marshal(u.Object)
		if err != nil {
			log.Printf("marshal: %v", err)
			return
		}
		ns, name := u.GetNamespace(), u.GetName()
		member := ns + ":" + name
		keys := []string{*prefix + ":job:" + member, *prefix + ":index:job",
			*prefix + ":tombstone:job:" + member, *prefix + ":changes"}
		if err := apply.Run(ctx, rdb, keys, typ, u.GetResourceVersion(), body, member).Err(); err != nil {
			log.Printf("apply %s: %v", member, err)
		}
	}
	_, err = factory.ForResource(gvr).Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { write("ADDED", obj) },
		UpdateFunc: func(_, obj interface{}) { write("MODIFIED", obj) },
		DeleteFunc: func(obj interface{}) { write("DELETED", obj) },
	})
	if err != nil {
		log.Fatalf("handler: %v", err)
	}
	factory.Start(ctx.Done())
	synced := time.Now()
	factory.WaitForCacheSync(ctx.Done())
	log.Printf("informer-go: synced in %s", time.Since(synced))
	<-ctx.Done()
}
