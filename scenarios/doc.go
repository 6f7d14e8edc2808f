// Package scenarios holds rlslab's scenarios, one file each, written only
// against the exported API of package engine (your-app also runs rlslab's
// PostgreSQL proxy, packages pgproxy and appview, to draw what it
// observes): each reads like its lesson, a script of requests and what
// they show.
package scenarios
