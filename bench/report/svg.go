package report

import (
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// palette colours contenders in order of first appearance.
var palette = []string{"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f"}

// WriteSVG draws one panel per scenario (those named in scenarios, in that
// order; all scenarios present when empty): for each image a group of bars,
// one per contender, its height the median, a whisker from min to max, the
// median printed above. Failed rows are marked "failed". Contenders get
// their colours in the order of contenders (so every plot colours them
// alike), then of appearance.
func WriteSVG(w io.Writer, title string, rows []Row, contenders []string, scenarios ...string) error {
	if len(scenarios) == 0 {
		seen := map[string]bool{}
		for _, r := range rows {
			if !seen[r.Scenario] {
				seen[r.Scenario] = true
				scenarios = append(scenarios, r.Scenario)
			}
		}
	}
	colour := map[string]string{}
	n := 0
	for _, c := range contenders {
		if _, ok := colour[c]; !ok {
			colour[c] = palette[n%len(palette)]
			n++
		}
	}
	var present []string
	for _, r := range rows {
		if _, ok := colour[r.Contender]; !ok {
			colour[r.Contender] = palette[n%len(palette)]
			n++
		}
		if !slices.Contains(present, r.Contender) {
			present = append(present, r.Contender)
		}
	}
	const (
		width   = 900
		panelH  = 260
		top     = 60
		left    = 70
		right   = 20
		barGap  = 4
		groupGp = 30
	)
	var b strings.Builder
	y0 := top
	for _, sc := range scenarios {
		var images []string
		byImage := map[string][]Row{}
		maxV := 0.0
		for _, r := range rows {
			if r.Scenario != sc {
				continue
			}
			label := r.Image
			if r.Form != "" && r.Form != "gzip" {
				label += " (" + r.Form + ")"
			}
			if _, ok := byImage[label]; !ok {
				images = append(images, label)
			}
			byImage[label] = append(byImage[label], r)
			if r.Runs > 0 {
				maxV = max(maxV, r.Max)
			}
		}
		if len(images) == 0 {
			continue
		}
		if maxV == 0 {
			maxV = 1
		}
		plotH := panelH - 70
		base := y0 + 30 + plotH
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="14" font-weight="bold">%s</text>`+"\n", left, y0+14, html.EscapeString(sc))
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", left, base, width-right, base)
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`+"\n", left, y0+30, left, base)
		for i := 0; i <= 4; i++ {
			v := maxV * float64(i) / 4
			y := float64(base) - float64(plotH)*float64(i)/4
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" font-size="10" text-anchor="end">%s</text>`+"\n", left-4, y+3, Seconds(v))
			if i > 0 {
				fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", left, y, width-right, y)
			}
		}
		groupW := float64(width-left-right-groupGp*len(images)) / float64(len(images))
		for gi, im := range images {
			g := byImage[im]
			gx := float64(left) + float64(groupGp)/2 + float64(gi)*(groupW+groupGp)
			barW := (groupW - float64(barGap*(len(g)-1))) / float64(len(g))
			barW = min(barW, 60)
			x0 := gx + (groupW-(float64(len(g))*(barW+barGap)-barGap))/2
			for bi, r := range g {
				x := x0 + float64(bi)*(barW+barGap)
				if r.Runs == 0 {
					fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" fill="#c00" transform="rotate(-90 %.1f %d)">%s failed</text>`+"\n",
						x+barW/2+3, base-4, x+barW/2+3, base-4, html.EscapeString(r.Contender))
					continue
				}
				h := float64(plotH) * r.Median / maxV
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s %s: median %s (min %s, max %s)</title></rect>`+"\n",
					x, float64(base)-h, barW, h, colour[r.Contender], html.EscapeString(sc), html.EscapeString(im),
					html.EscapeString(r.Contender), Seconds(r.Median), Seconds(r.Min), Seconds(r.Max))
				ymin := float64(base) - float64(plotH)*r.Min/maxV
				ymax := float64(base) - float64(plotH)*r.Max/maxV
				cx := x + barW/2
				fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#222"/>`+"\n", cx, ymin, cx, ymax)
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="9" text-anchor="middle">%s</text>`+"\n", cx, ymax-3, Seconds(r.Median))
			}
			// "image (form)" on two lines: side by side they overlap.
			name, form, hasForm := strings.Cut(im, " (")
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>`+"\n", gx+groupW/2, base+15, html.EscapeString(name))
			if hasForm {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10" text-anchor="middle">(%s</text>`+"\n", gx+groupW/2, base+27, html.EscapeString(form))
			}
		}
		y0 += panelH
	}
	height := y0 + 10
	var legend strings.Builder
	lx := left
	for _, c := range present {
		fmt.Fprintf(&legend, `<rect x="%d" y="32" width="12" height="12" fill="%s"/><text x="%d" y="42" font-size="11">%s</text>`+"\n", lx, colour[c], lx+16, html.EscapeString(c))
		lx += 24 + 7*len(c)
	}
	_, err := fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif">
<rect width="100%%" height="100%%" fill="white"/>
<text x="%d" y="20" font-size="15">%s</text>
%s%s</svg>
`, width, height, left, html.EscapeString(title), legend.String(), b.String())
	return err
}
