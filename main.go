// cmesh-run starts jobs that outlive whoever asked for them. See man/cmesh-run.1.
package main

import "github.com/cmesh/cmesh-run/run"

func main() { run.Run() }
