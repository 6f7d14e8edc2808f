package views

import (
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Chart geometry: the SVG viewBox of every chart and its plot area's
// margins (left for the y labels, top, bottom for the x labels).
const (
	chartW = 600.0
	chartH = 180.0
	chartL = 44.0
	chartT = 8.0
	chartB = 20.0
)

// Polyline is one line of an SVG chart, in viewBox coordinates.
type Polyline struct {
	Name   string
	Class  string
	Points string
	Last   string
}

// Tick is one labelled position on an axis.
type Tick struct {
	Pos   float64
	Label string
}

// SVGChart is a chart ready to draw.
type SVGChart struct {
	Title  string
	XUnit  string
	YUnit  string
	Lines  []Polyline
	YTicks []Tick
	XTicks []Tick
	Width  float64
	Height float64
	Bottom float64 // the x axis's y
	// YMax and XMax are the ends of the axes.
	YMax, XMax string
}

// AxisNote says in words what the chart plots: "connections over time" for a
// chart along seconds, else "ms against rows".
func (c SVGChart) AxisNote() string {
	if c.XUnit == "s" {
		return c.YUnit + " over time"
	}
	return c.YUnit + " against " + c.XUnit
}

// SeriesClass is the CSS class of a chart line, chosen by what the line
// means so that a series keeps its colour in every chart: limits are
// dashed, waiting and refusals amber, connections in use blue, idle ones
// green, totals the text colour; other names get a stable colour from
// their name. The LEAK red is never used.
func SeriesClass(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "limit") || n == "max" || strings.HasPrefix(n, "max_"):
		return "s-limit"
	case strings.Contains(n, "wait") || strings.Contains(n, "refused"):
		return "s-wait"
	case n == "acquired" || n == "in use" || n == "sv_active" || n == "cl_active":
		return "s-busy"
	case strings.Contains(n, "idle"):
		return "s-idle"
	case n == "total" || n == "open":
		return "s-total"
	}
	h := fnv.New32a()
	h.Write([]byte(n))
	return "s-" + strconv.Itoa(int(h.Sum32()%6))
}

// ConnChart draws the total/idle/acquired time series as steps (a count
// holds until it changes), with the pool's size as its limit line.
func (v Live) ConnChart() SVGChart {
	lines := []engine.Line{{Name: "total"}, {Name: "idle"}, {Name: "acquired"}}
	for i, s := range v.Series {
		x := float64(s.Millis) / 1000
		for j, y := range [3]int32{s.Total, s.Idle, s.Acquired} {
			if pts := lines[j].Points; i > 0 && pts[len(pts)-1].Y != float64(y) {
				lines[j].Points = append(pts, engine.Point{X: x, Y: pts[len(pts)-1].Y})
			}
			lines[j].Points = append(lines[j].Points, engine.Point{X: x, Y: float64(y)})
		}
	}
	if v.Pool.Max > 0 && len(v.Series) > 0 {
		first, last := float64(v.Series[0].Millis)/1000, float64(v.Series[len(v.Series)-1].Millis)/1000
		lines = append(lines, engine.Line{Name: "pool max", Points: []engine.Point{{X: first, Y: float64(v.Pool.Max)}, {X: last, Y: float64(v.Pool.Max)}}})
	}
	c := engine.Chart{Title: "Pool connections over time", XUnit: "s", YUnit: "connections", Lines: lines}
	return drawChart(c, float64(max(v.Pool.Max, 1)))
}

// SeriesSpan reports whether the connections time series spans some time:
// a run at full speed may end within one sample, and a chart of one
// instant says nothing (nor does a run without a pool: its chart is
// hidden too).
func (v Live) SeriesSpan() bool {
	return len(v.Series) >= 2 && v.Series[len(v.Series)-1].Millis > v.Series[0].Millis
}

// Charts draws the scenario's own charts.
func (v Live) Charts() []SVGChart {
	out := make([]SVGChart, 0, len(v.State.Charts))
	for _, c := range v.State.Charts {
		out = append(out, drawChart(c, 0))
	}
	return out
}

// drawChart scales c's lines into the viewBox; yTop is the least top of the
// y axis.
func drawChart(c engine.Chart, yTop float64) SVGChart {
	xMin, xMax, yMax := 0.0, 0.0, yTop
	first := true
	for _, l := range c.Lines {
		for _, p := range l.Points {
			if first {
				xMin, xMax, first = p.X, p.X, false
			}
			xMin, xMax, yMax = min(xMin, p.X), max(xMax, p.X), max(yMax, p.Y)
		}
	}
	single := xMax == xMin
	if single {
		xMax = xMin + 1
	}
	if yMax == 0 {
		yMax = 1
	}
	yMax = niceCeil(yMax)
	bottom := chartH - chartB
	plotW, plotH := chartW-chartL, bottom-chartT
	sx := func(x float64) float64 { return chartL + (x-xMin)/(xMax-xMin)*plotW }
	sy := func(y float64) float64 { return bottom - y/yMax*plotH }
	out := SVGChart{Title: c.Title, XUnit: c.XUnit, YUnit: c.YUnit, Width: chartW, Height: chartH, Bottom: bottom,
		YMax: trimFloat(yMax), XMax: trimFloat(xMax)}
	for _, f := range []float64{0, 0.5, 1} {
		out.YTicks = append(out.YTicks, Tick{Pos: sy(yMax * f), Label: trimFloat(yMax * f)})
	}
	out.XTicks = []Tick{{Pos: chartL + 12, Label: trimFloat(xMin) + " " + c.XUnit}, {Pos: chartW - 24, Label: trimFloat(xMax) + " " + c.XUnit}}
	for _, l := range c.Lines {
		var b strings.Builder
		for j, p := range thin(l.Points, maxDrawnPoints) {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.0f,%.0f", sx(p.X), sy(p.Y))
			if single && len(l.Points) == 1 {
				// One instant only (a run at full speed): draw it across.
				fmt.Fprintf(&b, " %.0f,%.0f", chartW, sy(p.Y))
			}
		}
		last := ""
		if n := len(l.Points); n > 0 {
			last = trimFloat(l.Points[n-1].Y)
		}
		out.Lines = append(out.Lines, Polyline{Name: l.Name, Class: SeriesClass(l.Name), Points: b.String(), Last: last})
	}
	return out
}

// maxDrawnPoints bounds the points drawn per chart line: a chart is a few
// hundred pixels wide.
const maxDrawnPoints = 60

// thin returns at most n of points, evenly spread, always with the first
// and the last.
func thin(points []engine.Point, n int) []engine.Point {
	if len(points) <= n {
		return points
	}
	out := make([]engine.Point, 0, n)
	step := float64(len(points)-1) / float64(n-1)
	for i := range n {
		out = append(out, points[int(math.Round(float64(i)*step))])
	}
	return out
}

// niceCeil rounds y up to 1, 2, 2.5 or 5 times a power of ten, so that the
// axis labels are round numbers.
func niceCeil(y float64) float64 {
	if y <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(y)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if y <= m*p+1e-9 {
			return m * p
		}
	}
	return 10 * p
}

// trimFloat formats f with at most two decimals.
func trimFloat(f float64) string { return strconv.FormatFloat(math.Round(f*100)/100, 'f', -1, 64) }
