package engine

// SetAfterBack makes p's release hook call f after it read a connection
// back and before pgxpool takes the connection back.
func SetAfterBack(p *Pool, f func()) { p.afterBack = f }
